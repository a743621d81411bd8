"""The data sets as torch Datasets and the paired training loaders of GLMC.

Each epoch's sample order, and each sample's augmentation seed, is a pure
function of (seed, epoch), so a run resumed from a checkpoint, even one written
mid-epoch, sees the same batches as an uninterrupted run, whatever the number of
loader workers.
"""
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

from datasets.image_files import collate_fn_for, sample_index
from utils.class_weights import class_balance_weights


class ImageArrayDataset(Dataset):
    """uint8 HWC images held in memory, returned as (transform(PIL image), label)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: Optional[Callable] = None) -> None:
        self.images = images
        self.targets = [int(y) for y in labels]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, key):
        index = sample_index(key)
        image = Image.fromarray(self.images[index])
        if self.transform is not None:
            image = self.transform(image)
        return image, self.targets[index]


def class_counts(targets: Sequence[int], num_classes: int) -> List[int]:
    return np.bincount(np.asarray(targets, dtype=np.int64), minlength=num_classes).tolist()


def resample_weights(targets: Sequence[int], counts: Sequence[int], power: float) -> torch.Tensor:
    """Each image carries its class's weight n_c ** -q."""
    return class_balance_weights(counts, power).double()[torch.as_tensor(targets)]


def derived_seed(*keys: int) -> int:
    """An independent 63-bit seed for a tuple of integers (seed, stream, epoch, ...)."""
    return int(np.random.SeedSequence(list(keys)).generate_state(1, dtype=np.uint64)[0]) & (2 ** 63 - 1)


def epoch_generator(seed: int, stream: int, epoch: int) -> torch.Generator:
    """An independent generator for one (seed, stream, epoch)."""
    return torch.Generator().manual_seed(derived_seed(seed, stream, epoch))


class EpochSampler(Sampler[int]):
    """A shuffled permutation (weights None) or weighted draws with replacement, fixed by (seed, epoch).

    With `world > 1` the epoch's indices are padded (wrapping around) to a multiple of
    `world` and rank r takes every world-th from r: the shards never overlap and have
    equal length. `set_epoch(epoch, start)` selects the epoch and skips this shard's
    first `start` indices.
    """

    def __init__(self, size: int, seed: int, stream: int, weights: Optional[torch.Tensor] = None,
                 rank: int = 0, world: int = 1) -> None:
        self.size, self.seed, self.stream, self.weights = size, seed, stream, weights
        self.rank, self.world = rank, world
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    @property
    def shard_size(self) -> int:
        return -(-self.size // self.world)

    def _shard(self, full: torch.Tensor) -> torch.Tensor:
        padded = torch.cat([full, full[: self.shard_size * self.world - self.size]])
        return padded[self.rank::self.world]

    def indices(self) -> torch.Tensor:
        g = epoch_generator(self.seed, self.stream, self.epoch)
        if self.weights is None:
            return self._shard(torch.randperm(self.size, generator=g))
        return self._shard(torch.multinomial(self.weights, self.size, replacement=True, generator=g))

    def sample_seeds(self) -> torch.Tensor:
        """One augmentation seed per position of this shard's epoch."""
        g = epoch_generator(self.seed, 10 + self.stream, self.epoch)
        return self._shard(torch.randint(0, 2 ** 62, (self.size,), generator=g))

    def __iter__(self) -> Iterator:
        """(index, augmentation seed) pairs: the views of a sample depend only on (seed, epoch, position)."""
        pairs = zip(self.indices()[self.start:].tolist(), self.sample_seeds()[self.start:].tolist())
        return iter(pairs)

    def __len__(self) -> int:
        return self.shard_size - self.start


def make_samplers(targets: Sequence[int], counts: Sequence[int], resample_power: Optional[float], seed: int,
                  rank: int = 0, world: int = 1) -> List[EpochSampler]:
    """The uniform sampler, and the class re-sampling one when `resample_power` is set."""
    samplers = [EpochSampler(len(targets), seed, stream=0, rank=rank, world=world)]
    if resample_power is not None:
        weights = resample_weights(targets, counts, resample_power)
        samplers.append(EpochSampler(len(targets), seed, stream=1, weights=weights, rank=rank, world=world))
    return samplers


class TrainLoader:
    """The uniform loader, and with `resample_power` set, batch i of it paired with batch i of the
    class re-sampling loader.

    Both samplers draw as many images as the data set has, so the two loaders
    have the same length and the partner batch always matches the original's size.
    Every sample's augmentation comes from its own seed, so the batches do not depend
    on the number of loader workers, and a run resumed mid-epoch replays them exactly.
    """

    def __init__(self, dataset: Dataset, counts: Sequence[int], batch_size: int, resample_power: Optional[float],
                 workers: int, seed: int, pin_memory: bool = False, rank: int = 0, world: int = 1) -> None:
        self.batch_size, self.dataset = batch_size, dataset
        self.samplers = make_samplers(dataset.targets, counts, resample_power, seed, rank, world)
        # Own generator: making the workers' base seed leaves the global random stream alone.
        self.loaders = [DataLoader(dataset, batch_size=batch_size, sampler=s, num_workers=workers,
                                   pin_memory=pin_memory, collate_fn=collate_fn_for(dataset),
                                   generator=torch.Generator()) for s in self.samplers]

    def __len__(self) -> int:
        return -(-self.samplers[0].shard_size // self.batch_size)

    def epoch(self, epoch: int, skip_batches: int = 0) -> Iterator[Tuple]:
        """Tuples (original batch[, partner batch]) of `epoch`, starting after `skip_batches`."""
        for sampler in self.samplers:
            sampler.set_epoch(epoch, skip_batches * self.batch_size)
        return zip(*self.loaders)
