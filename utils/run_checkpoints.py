"""The checkpoints of one training run: what a checkpoint holds, when it is written, and what a failed
write tells the user."""
import os
from typing import Dict, Optional

import torch
from torch import nn

from utils.checkpoint import LATEST, BackgroundWriter, first_non_finite, unwrap
from utils.distributed import World, any_rank
from utils.errors import EXIT_DIVERGED, RunStopped, WriteFailed
from utils.progress import EpochProgress
from utils.rng import rng_states
from utils.metrics_log import METRICS, append_metrics
from utils.safe_files import check_writable


class RunCheckpoints:
    """Each epoch's checkpoint is written in the background while the next epoch trains, its line of
    `metrics.jsonl` after it; a mid-epoch checkpoint (the process stops next) is on disk before `save`
    returns. Non-finite weights or BatchNorm statistics are refused, keeping the last checkpoint."""

    def __init__(self, run_dir: str, ckpt_dir: str, description: Dict, world: World, device: torch.device,
                 arch: str, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler,
                 scaler: Optional[torch.amp.GradScaler]) -> None:
        self.run_dir, self.ckpt_dir, self.description, self.world, self.device = (run_dir, ckpt_dir, description,
                                                                                 world, device)
        self.arch, self.model, self.optimizer, self.scheduler, self.scaler = arch, model, optimizer, scheduler, scaler
        self.writer = BackgroundWriter()

    def save(self, epochs_done: int, best_acc1: float, best_epoch: Optional[int], is_best: bool,
             record: Optional[Dict] = None, in_epoch: Optional[EpochProgress] = None) -> None:
        state_dict = unwrap(self.model).state_dict()
        bad = first_non_finite(state_dict)
        (diverged,) = any_rank(self.world, [bad is not None], self.device)
        if diverged:
            raise RunStopped(f"non-finite values in {bad or 'the model of another process'} at epoch "
                             f"{epochs_done + (1 if in_epoch else 0)}: the run diverged (is --lr too large?). "
                             "Nothing was saved; the last checkpoint is left intact.", EXIT_DIVERGED)
        if not self.world.is_main:
            return
        state = {"epoch": epochs_done, "arch": self.arch, "state_dict": state_dict, "best_acc1": best_acc1,
                 "best_epoch": best_epoch, "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict() if self.scaler else None,
                 "rng": rng_states(self.device), "in_epoch": in_epoch.snapshot() if in_epoch else None,
                 "record": record, "run": self.description, "run_dir": self.run_dir}
        metrics = os.path.join(self.run_dir, METRICS)
        self.writer.save(state, self.ckpt_dir, is_best, every=20 if in_epoch is None else 0,
                         after=(lambda: append_metrics(metrics, record)) if record else None)
        if in_epoch is not None:
            self.wait()

    def check_folders(self) -> None:
        """Stop now (WriteFailed) if the run or checkpoint folder can no longer be written."""
        if self.world.is_main:
            for folder in dict.fromkeys((self.run_dir, self.ckpt_dir)):
                check_writable(folder)

    def wait(self) -> None:
        """Until the checkpoint being written is on disk; raises its write's error."""
        self.writer.wait()

    def join(self) -> None:
        """Until the write in progress ends, whatever its outcome."""
        self.writer.join()

    def write_failed(self, exc: WriteFailed, again: str) -> WriteFailed:
        """The error that ends the run after a failed write, with what to do next."""
        self.join()  # a later write may still be under way
        if not (os.path.isdir(self.run_dir) and os.path.isdir(self.ckpt_dir)):
            advice = "Nothing more of this run can be saved"
        elif os.path.isfile(os.path.join(self.ckpt_dir, LATEST)):
            advice = f"The last good checkpoint is kept; once fixed, continue with:\n  {again}"
        else:
            advice = "The run had no checkpoint yet; start it again once fixed"
        return WriteFailed(exc.path, exc.cause, advice)
