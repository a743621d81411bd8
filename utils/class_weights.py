"""Per-class weights from the training set's class counts.

Shared by the class re-sampling loader (`datasets/`, weight n_c ** -q per image)
and the re-weighted soft labels of the loss (`glmc/`, n_c ** -gamma per class):
both import it from here, so that neither side imports the other.
"""
from typing import Sequence

import torch


def class_balance_weights(counts: Sequence[int], power: float) -> torch.Tensor:
    """w_c = n_c ** -power, normalised to sum to C (classes with no image get 0)."""
    n = torch.tensor(counts, dtype=torch.float64)
    w = torch.where(n > 0, n.clamp(min=1) ** -power, torch.zeros_like(n))
    return (w / w.sum() * len(counts)).float()
