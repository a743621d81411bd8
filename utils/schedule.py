"""Learning-rate schedules (SPEC §6), as LambdaLR factors stepped once per epoch."""
import math

import torch
from torch.optim.lr_scheduler import LambdaLR


class CosineFactor:
    """Cosine annealing from the base rate to 0 over `epochs`, no warm-up (CIFAR, nepes)."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def __call__(self, epoch: int) -> float:
        return 0.5 * (1.0 + math.cos(math.pi * epoch / self.epochs))


def build_scheduler(optimizer: torch.optim.Optimizer, epochs: int) -> LambdaLR:
    return LambdaLR(optimizer, CosineFactor(epochs))
