"""Global MixUp and local CutMix of a pair of batches (SPEC §5 steps 1-3).

Randomness comes from a `numpy.random.Generator` passed in, so a test can pin
lambda and the box, or build a `Mix` by hand.
"""
import math
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
import torch


@dataclass(frozen=True)
class Mix:
    """lambda and the CutMix box (top, bottom, left, right; bottom/right exclusive)."""

    lam: float
    box: Tuple[int, int, int, int]

    def pasted_fraction(self, height: int, width: int) -> float:
        top, bottom, left, right = self.box
        return (bottom - top) * (right - left) / (height * width)


def cutmix_box(height: int, width: int, lam: float, cy: int, cx: int) -> Tuple[int, int, int, int]:
    """Box of half-side k = ceil(side * sqrt(1 - lam)) // 2 around (cy, cx), clipped to the image."""
    ky = math.ceil(height * math.sqrt(1.0 - lam)) // 2
    kx = math.ceil(width * math.sqrt(1.0 - lam)) // 2
    return (min(max(cy - ky, 0), height), min(max(cy + ky, 0), height),
            min(max(cx - kx, 0), width), min(max(cx + kx, 0), width))


def draw_mix(rng: np.random.Generator, height: int, width: int, beta: Optional[float] = None) -> Mix:
    """lambda uniform on [0, 1] as released, or Beta(beta, beta) (the paper); a uniform box centre."""
    lam = float(rng.uniform(0.0, 1.0) if beta is None else rng.beta(beta, beta))
    cy, cx = int(rng.integers(height)), int(rng.integers(width))
    return Mix(lam, cutmix_box(height, width, lam, cy, cx))


def global_mix(a: torch.Tensor, b: torch.Tensor, lam: float) -> torch.Tensor:
    return lam * a + (1.0 - lam) * b


def local_mix(a: torch.Tensor, b: torch.Tensor, box: Tuple[int, int, int, int]) -> torch.Tensor:
    """`a` with the box of `b` pasted in; writes into a copy, never into `a`."""
    top, bottom, left, right = box
    out = a.clone()
    out[:, :, top:bottom, left:right] = b[:, :, top:bottom, left:right]
    return out
