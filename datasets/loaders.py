"""The data sets as torch Datasets and the paired training loaders (SPEC §3).

Each epoch's sample order (and the seeds of the loader's workers) is a pure
function of (seed, epoch), so a run resumed from a checkpoint, even one written
mid-epoch, sees the same batches as an uninterrupted run.
"""
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

from datasets.image_files import collate_fn_for
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


def epoch_generator(seed: int, stream: int, epoch: int) -> torch.Generator:
    """An independent generator for one (seed, stream, epoch)."""
    state = np.random.SeedSequence([seed, stream, epoch]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & (2 ** 63 - 1))


class EpochSampler(Sampler[int]):
    """A shuffled permutation (weights None) or weighted draws with replacement, fixed by (seed, epoch).

    `set_epoch(epoch, start)` selects the epoch and skips its first `start` indices.
    """

    def __init__(self, size: int, seed: int, stream: int, weights: Optional[torch.Tensor] = None) -> None:
        self.size, self.seed, self.stream, self.weights = size, seed, stream, weights
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def indices(self) -> torch.Tensor:
        g = epoch_generator(self.seed, self.stream, self.epoch)
        if self.weights is None:
            return torch.randperm(self.size, generator=g)
        return torch.multinomial(self.weights, self.size, replacement=True, generator=g)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices()[self.start:].tolist())

    def __len__(self) -> int:
        return self.size - self.start


class TrainLoader:
    """The uniform loader, and with `resample_power` set, batch i of it paired with batch i of the
    class re-sampling loader (SPEC §3).

    Both samplers draw as many images as the data set has, so the two loaders
    have the same length and the partner batch always matches the original's size.
    """

    def __init__(self, dataset: Dataset, counts: Sequence[int], batch_size: int, resample_power: Optional[float],
                 workers: int, seed: int, pin_memory: bool = False) -> None:
        self.seed, self.batch_size, self.dataset = seed, batch_size, dataset
        n = len(dataset)
        self.samplers = [EpochSampler(n, seed, stream=0)]
        if resample_power is not None:
            weights = resample_weights(dataset.targets, counts, resample_power)
            self.samplers.append(EpochSampler(n, seed, stream=1, weights=weights))
        self.loaders = [DataLoader(dataset, batch_size=batch_size, sampler=s, num_workers=workers,
                                   pin_memory=pin_memory, generator=torch.Generator(), collate_fn=collate_fn_for(dataset))
                        for s in self.samplers]

    def __len__(self) -> int:
        return -(-self.samplers[0].size // self.batch_size)

    def epoch(self, epoch: int, skip_batches: int = 0) -> Iterator[Tuple]:
        """Tuples (original batch[, partner batch]) of `epoch`, starting after `skip_batches`."""
        for stream, (sampler, loader) in enumerate(zip(self.samplers, self.loaders)):
            sampler.set_epoch(epoch, skip_batches * self.batch_size)
            loader.generator.manual_seed(int(epoch_generator(self.seed, 2 + stream, epoch).initial_seed()))
        return zip(*self.loaders)
