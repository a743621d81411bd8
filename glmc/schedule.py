"""Learning-rate schedules, as LambdaLR factors of the base rate, stepped once per epoch."""
import math
from typing import List, Sequence

import torch
from torch.optim.lr_scheduler import LambdaLR

WARMUP_DATASETS = ("ImageNet-LT", "iNaturelist2018")


class CosineFactor:
    """Cosine annealing from the base rate to 0 over `epochs`, no warm-up (CIFAR, nepes)."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def __call__(self, epoch: int) -> float:
        return 0.5 * (1.0 + math.cos(math.pi * epoch / self.epochs))


class WarmupCosineFactor:
    """The ImageNet-LT / iNat rule: rule(e) = (e + 1) / 10 while e <= 10, else
    0.5 * (1 + cos(pi * (e - 9) / (epochs - 9))).

    The released code applies rule(e) after epoch e, so epoch 0 runs at the base rate
    and epoch k >= 1 at rule(k - 1) (`late=True`, the default); `late=False` applies
    rule(k) to epoch k, the warm-up on time.
    """

    def __init__(self, epochs: int, late: bool = True) -> None:
        self.epochs, self.late = epochs, late

    def rule(self, e: int) -> float:
        if e <= 10:
            return (e + 1) / 10
        return 0.5 * (1.0 + math.cos(math.pi * (e - 9) / (self.epochs - 9)))

    def __call__(self, epoch: int) -> float:
        if self.late:
            return 1.0 if epoch == 0 else self.rule(epoch - 1)
        return self.rule(epoch)


def lr_factor(dataset: str, epochs: int, late_warmup: bool = True):
    return WarmupCosineFactor(epochs, late_warmup) if dataset in WARMUP_DATASETS else CosineFactor(epochs)


def build_scheduler(optimizer: torch.optim.Optimizer, dataset: str, epochs: int, late_warmup: bool = True) -> LambdaLR:
    return LambdaLR(optimizer, lr_factor(dataset, epochs, late_warmup))


def lr_per_epoch(dataset: str, epochs: int, lr: float, late_warmup: bool = True) -> List[float]:
    """The learning rate of every epoch, 1 to `epochs`."""
    factor = lr_factor(dataset, epochs, late_warmup)
    return [lr * factor(e) for e in range(epochs)]


def summarize_lr(values: Sequence[float], first: int = 3) -> str:
    """'1: 0.01, 2: 0.01, 3: 0.0099, ..., 200: 6.2e-07; peak 0.01 at epoch 1': the first epochs, the last, the peak."""
    shown = [f"{e + 1}: {values[e]:.3g}" for e in range(min(first, len(values)))]
    if len(values) > first:
        shown += (["..."] if len(values) > first + 1 else []) + [f"{len(values)}: {values[-1]:.3g}"]
    peak = max(range(len(values)), key=lambda e: values[e])
    return ", ".join(shown) + f"; peak {values[peak]:.3g} at epoch {peak + 1}"
