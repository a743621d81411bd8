"""Global MixUp and local CutMix of a pair of batches.

lambda and the CutMix box are drawn on the host with numpy, as in the released
code, but a whole epoch at a time from a generator fixed by (seed, epoch), and
sent to the device once per epoch as a table. A step then reads its row (a view,
no host sync), so the step has fixed shapes and no Python numbers that change
from step to step: it can be compiled once or captured as a CUDA graph. The
local mix is a mask blend of fixed shape, equal bit for bit to pasting the box.
"""
import math
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
import torch

MIX_STREAM = 5  # keeps the mix draws apart from the data streams seeded by the same seed


@dataclass(frozen=True)
class HostMix:
    """lambda and the CutMix box (top, bottom, left, right; bottom/right exclusive) as host numbers."""

    lam: float
    box: Tuple[int, int, int, int]

    def pasted_fraction(self, height: int, width: int) -> float:
        top, bottom, left, right = self.box
        return (bottom - top) * (right - left) / (height * width)


@dataclass(frozen=True)
class Mix:
    """One step's mix on the device.

    `lam` holds (lambda, 1 - lambda), `area` holds (1 - pasted fraction, pasted fraction), both
    computed in float64 and rounded once to float32, as `w * a + (1 - w) * b` with a Python float w
    rounds them; `box` is int64 (top, bottom, left, right).
    """

    lam: torch.Tensor
    area: torch.Tensor
    box: torch.Tensor


def cutmix_box(height: int, width: int, lam: float, cy: int, cx: int) -> Tuple[int, int, int, int]:
    """Box of half-side k = ceil(side * sqrt(1 - lam)) // 2 around (cy, cx), clipped to the image."""
    ky = math.ceil(height * math.sqrt(1.0 - lam)) // 2
    kx = math.ceil(width * math.sqrt(1.0 - lam)) // 2
    return (min(max(cy - ky, 0), height), min(max(cy + ky, 0), height),
            min(max(cx - kx, 0), width), min(max(cx + kx, 0), width))


def draw_mix(rng: np.random.Generator, height: int, width: int, beta: Optional[float] = None) -> HostMix:
    """lambda uniform on [0, 1] as released, or Beta(beta, beta) (the paper); a uniform box centre."""
    lam = float(rng.uniform(0.0, 1.0) if beta is None else rng.beta(beta, beta))
    cy, cx = int(rng.integers(height)), int(rng.integers(width))
    return HostMix(lam, cutmix_box(height, width, lam, cy, cx))


def weight_pair(w: float, device: torch.device) -> torch.Tensor:
    """(w, 1 - w) as float32 on `device`, 1 - w taken in float64 first."""
    return torch.tensor([w, 1.0 - w], dtype=torch.float64).float().to(device)


def device_mix(mix: HostMix, height: int, width: int, device: torch.device) -> Mix:
    """A host mix as a device `Mix`."""
    return MixTable([mix], height, width, device).step(0)


class MixTable:
    """The mixes of consecutive steps as three device tensors; `step(s)` is step s's `Mix` (views)."""

    def __init__(self, mixes, height: int, width: int, device: torch.device) -> None:
        lam = torch.tensor([[m.lam, 1.0 - m.lam] for m in mixes], dtype=torch.float64)
        kept = [1.0 - m.pasted_fraction(height, width) for m in mixes]
        area = torch.tensor([[k, 1.0 - k] for k in kept], dtype=torch.float64)
        self.lam, self.area = lam.float().to(device), area.float().to(device)
        self.box = torch.tensor([m.box for m in mixes], dtype=torch.int64).to(device)

    def step(self, s: int) -> Mix:
        return Mix(self.lam[s], self.area[s], self.box[s])


def epoch_mixes(seed: int, epoch: int, steps: int, height: int, width: int, beta: Optional[float],
                device: torch.device) -> MixTable:
    """The mixes of one epoch's steps, a pure function of (seed, epoch): a resumed run draws the same."""
    rng = np.random.default_rng([seed, MIX_STREAM, epoch])
    return MixTable([draw_mix(rng, height, width, beta) for _ in range(steps)], height, width, device)


def global_mix(a: torch.Tensor, b: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """lam[0] * a + lam[1] * b, with lam = (lambda, 1 - lambda)."""
    return lam[0] * a + lam[1] * b


def box_mask(box: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(height, width) bool mask of the box (top, bottom, left, right), made on the box's device."""
    rows = torch.arange(height, device=box.device)
    cols = torch.arange(width, device=box.device)
    inside_rows = (rows >= box[0]) & (rows < box[1])
    inside_cols = (cols >= box[2]) & (cols < box[3])
    return inside_rows[:, None] & inside_cols[None, :]


def local_mix(a: torch.Tensor, b: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    """`a` with the box of `b` pasted in, as a blend through the box's mask (a new tensor)."""
    return torch.where(box_mask(box, *a.shape[-2:]), b, a)
