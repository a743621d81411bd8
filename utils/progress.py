"""What a training epoch keeps track of: its progress (for mid-epoch resume) and divergence."""
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

import torch

from utils.distributed import World, any_rank
from utils.errors import EXIT_DIVERGED, RunStopped


@dataclass
class EpochProgress:
    """How far the current epoch got: batches done, running sums of the loss terms, and the seconds it
    trained (an epoch resumed mid-way counts the time before the stop too).

    The sums may be device tensors during the epoch (no host sync per step).
    """

    step: int = 0
    seen: int = 0
    sums: Dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    def means(self) -> Dict[str, float]:
        return {k: float(v) / max(self.seen, 1) for k, v in self.sums.items()}

    def snapshot(self) -> Dict:
        return {"step": self.step, "seen": self.seen, "sums": {k: float(v) for k, v in self.sums.items()},
                "seconds": self.seconds}


def remaining_time(elapsed: float, steps_done: int, steps_left: int, steps_per_epoch: int,
                   epochs_after: int) -> Tuple[float, float]:
    """(seconds left in this epoch, seconds left in the run) at the epoch's pace so far; evaluation
    and the first steps' compilation are not told apart, so early estimates run high."""
    per_step = elapsed / max(steps_done, 1)
    epoch_left = per_step * steps_left
    return epoch_left, epoch_left + per_step * steps_per_epoch * epochs_after


def format_duration(seconds: float) -> str:
    """45s, 3m20s, 2h05m, 1d03h."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


class DivergenceWatch:
    """Remembers the first step whose loss was not finite, without waiting for the device;
    `check` (at progress lines and before anything is saved) stops the run if there was one."""

    def __init__(self, device: torch.device) -> None:
        self.first_step = torch.full((), -1, dtype=torch.long, device=device)
        self.terms: Optional[torch.Tensor] = None
        self.names: Tuple[str, ...] = ()

    def update(self, step: int, loss: torch.Tensor, terms: Dict[str, torch.Tensor]) -> None:
        values = torch.stack([v.float() for v in terms.values()])
        new = ~torch.isfinite(loss.detach()) & (self.first_step < 0)
        self.first_step = torch.where(new, step, self.first_step)
        self.terms = values if self.terms is None else torch.where(new, values, self.terms)
        self.names = tuple(terms)

    def check(self, epoch: int, world: World, device: torch.device) -> None:
        step = int(self.first_step)
        (diverged,) = any_rank(world, [step >= 0], device)
        if diverged:
            values = ", ".join(f"{k} {v:.4g}" for k, v in zip(self.names, self.terms.tolist())) if step >= 0 else \
                "on another process"
            raise RunStopped(f"non-finite loss at epoch {epoch + 1}, step {step + 1}: {values}. "
                             "The run stopped without saving; the last checkpoint is left intact.", EXIT_DIVERGED)


def plural(n: int, noun: str, nouns: Optional[str] = None) -> str:
    """'1 step', '2 steps'; `nouns` for another plural ('1 class', '2 classes')."""
    return f"{n} {noun if n == 1 else nouns or noun + 's'}"
