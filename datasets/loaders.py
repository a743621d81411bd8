"""The data sets as torch Datasets and the two training loaders (SPEC §3)."""
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

from utils.losses import class_balance_weights


class ImageArrayDataset(Dataset):
    """uint8 HWC images held in memory, returned as (transform(PIL image), label)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: Optional[Callable] = None) -> None:
        self.images = images
        self.targets = [int(y) for y in labels]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        image = Image.fromarray(self.images[index])
        if self.transform is not None:
            image = self.transform(image)
        return image, self.targets[index]


def class_counts(targets: Sequence[int], num_classes: int) -> List[int]:
    return np.bincount(np.asarray(targets, dtype=np.int64), minlength=num_classes).tolist()


def resample_weights(targets: Sequence[int], counts: Sequence[int], power: float) -> torch.Tensor:
    """Each image carries its class's weight n_c ** -q (SPEC §3)."""
    return class_balance_weights(counts, power).double()[torch.as_tensor(targets)]


def seeded_generator(seed: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def build_train_loaders(dataset: Dataset, counts: Sequence[int], batch_size: int, resample_power: float,
                        workers: int, seed: int, pin_memory: bool = False) -> Tuple[DataLoader, DataLoader]:
    """The uniform loader (shuffled) and the class re-sampling loader (weighted, with replacement)."""
    common = dict(batch_size=batch_size, num_workers=workers, pin_memory=pin_memory,
                  persistent_workers=workers > 0)
    uniform = DataLoader(dataset, shuffle=True, generator=seeded_generator(seed), **common)
    weights = resample_weights(dataset.targets, counts, resample_power)
    sampler = WeightedRandomSampler(weights, num_samples=len(weights), replacement=True,
                                    generator=seeded_generator(seed + 1))
    resampled = DataLoader(dataset, sampler=sampler, generator=seeded_generator(seed + 2), **common)
    return uniform, resampled


class PartnerBatches:
    """Endless batches of the re-sampling loader, restarted whenever it runs out."""

    def __init__(self, loader: DataLoader) -> None:
        self.loader = loader
        self._it: Optional[Iterator] = None

    def next(self):
        if self._it is None:
            self._it = iter(self.loader)
        try:
            return next(self._it)
        except StopIteration:
            self._it = iter(self.loader)
            return next(self._it)
