"""CIFAR batches made on the training device (`--data_path tensor`).

The uint8 training images live as one tensor on the device; each step indexes the
uniform and the re-sampled batch (the same samplers as the PIL path) and makes
each view with batched tensor operations: zero-pad 4, a random 32x32 crop (offsets
uniform over the 9 x 9 positions), a horizontal flip with p 0.5, normalise. These
are the distributions of the PIL path's RandomCrop(32, padding=4) and
RandomHorizontalFlip. The random draws of step s come from a generator seeded by
(seed, epoch, s, rank), so a resumed run replays them exactly.
"""
from typing import Iterator, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from datasets.loaders import derived_seed, make_samplers

PAD = 4


def to_device_images(images_hwc: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> uint8 (N, 3, H, W) on `device`."""
    return torch.from_numpy(np.ascontiguousarray(images_hwc)).permute(0, 3, 1, 2).contiguous().to(device)


def draw_crop_flip(n: int, gen: torch.Generator, pad: int = PAD) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per image: crop offsets (top, left), each uniform in 0..2*pad, and a flip flag with p 0.5."""
    device = gen.device
    top = torch.randint(0, 2 * pad + 1, (n,), generator=gen, device=device)
    left = torch.randint(0, 2 * pad + 1, (n,), generator=gen, device=device)
    flip = torch.rand(n, generator=gen, device=device) < 0.5
    return top, left, flip


def crop_flip(images: torch.Tensor, top: torch.Tensor, left: torch.Tensor, flip: torch.Tensor,
              pad: int = PAD) -> torch.Tensor:
    """The crops of the zero-padded images at (top, left), mirrored where `flip`; same dtype as `images`.

    One gather over the flattened padded images, so it costs a single pass over the output.
    """
    n, c, h, w = images.shape
    padded = F.pad(images, (pad, pad, pad, pad)).flatten(2)  # (n, c, (h + 2 pad) * (w + 2 pad))
    cols = torch.arange(w, device=images.device)
    cols = torch.where(flip[:, None], cols.flip(0), cols) + left[:, None]  # (n, w)
    rows = top[:, None] + torch.arange(h, device=images.device)  # (n, h)
    pixel = rows[:, :, None] * (w + 2 * pad) + cols[:, None, :]  # (n, h, w)
    return padded.gather(2, pixel.view(n, 1, h * w).expand(n, c, h * w)).view(n, c, h, w)


class Normalize:
    def __init__(self, mean: Sequence[float], std: Sequence[float], device: torch.device) -> None:
        self.mean = torch.tensor(mean, device=device).view(1, -1, 1, 1) * 255.0
        self.std = torch.tensor(std, device=device).view(1, -1, 1, 1) * 255.0

    def __call__(self, images_u8: torch.Tensor) -> torch.Tensor:
        return (images_u8.float() - self.mean) / self.std


class TensorTrainLoader:
    """Drop-in for `TrainLoader` on CIFAR: yields the same (batch[, partner batch]) tuples, on the device."""

    def __init__(self, images_hwc: np.ndarray, targets: Sequence[int], counts: Sequence[int], batch_size: int,
                 resample_power: Optional[float], seed: int, device: torch.device, mean, std, views: int = 2,
                 rank: int = 0, world: int = 1) -> None:
        self.images = to_device_images(images_hwc, device)
        self.targets = torch.as_tensor(list(targets), device=device)
        self.samplers = make_samplers(targets, counts, resample_power, seed, rank, world)
        self.batch_size, self.seed, self.rank, self.views = batch_size, seed, rank, views
        self.device, self.normalize = device, Normalize(mean, std, device)
        self.dataset = None

    def __len__(self) -> int:
        return -(-self.samplers[0].shard_size // self.batch_size)

    def epoch(self, epoch: int, skip_batches: int = 0) -> Iterator[Tuple]:
        orders = []
        for sampler in self.samplers:
            sampler.set_epoch(epoch)
            orders.append(sampler.indices().to(self.device))
        gen = torch.Generator(device=self.device)
        for step in range(skip_batches, len(self)):
            gen.manual_seed(derived_seed(self.seed, 4, epoch, step, self.rank))
            idx = [order[step * self.batch_size:(step + 1) * self.batch_size] for order in orders]
            n, parts = len(idx[0]), len(idx)
            images = self.images[torch.cat(idx)].repeat(self.views, 1, 1, 1)  # views x parts x n images
            views = self.normalize(crop_flip(images, *draw_crop_flip(len(images), gen)))
            views = views.view(self.views, parts, n, *views.shape[1:])
            yield tuple(([views[v, j] for v in range(self.views)] if self.views == 2 else views[0, j],
                         self.targets[idx[j]]) for j in range(parts))


class TensorTestLoader:
    """The test set as normalised batches on the device: (images, labels) like a DataLoader."""

    def __init__(self, images_hwc: np.ndarray, targets: Sequence[int], device: torch.device, mean, std,
                 batch_size: int, indices: Optional[Sequence[int]] = None) -> None:
        keep = np.arange(len(targets)) if indices is None else np.asarray(indices, dtype=np.int64)
        self.images = to_device_images(images_hwc[keep], device)
        self.targets = torch.as_tensor(np.asarray(targets)[keep], device=device)
        self.normalize, self.batch_size = Normalize(mean, std, device), batch_size

    def __len__(self) -> int:
        return -(-len(self.targets) // self.batch_size)

    def __iter__(self):
        for i in range(0, len(self.targets), self.batch_size):
            yield self.normalize(self.images[i:i + self.batch_size]), self.targets[i:i + self.batch_size]
