"""The loss of one training batch, for GLMC and for the cross-entropy baseline, optionally compiled.

Everything a step reads that changes between steps is a device tensor of fixed
shape (the batch, the step's mix, the epoch's alpha), so `torch.compile` traces the
step once per batch shape and `--compile reduce-overhead` replays it as a CUDA
graph. The host never waits for the device inside a step.
"""
from typing import Callable, Dict, Optional, Sequence, Tuple

import torch
from torch import nn

from glmc.losses import LossOptions, ce_loss, glmc_loss
from glmc.mixing import MixTable, epoch_mixes, weight_pair
from utils.class_weights import class_balance_weights
from utils.speed import autocast

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")  # modes that replay CUDA graphs

Terms = Dict[str, torch.Tensor]


def compiled(fn: Callable, mode: Optional[str]) -> Callable:
    """`fn` through torch.compile in `mode` (None: `fn` itself). Shapes are kept static: the full and
    the last, shorter batch each get their own graph instead of one slower dynamic-shape graph."""
    if mode is None:
        return fn
    if mode not in COMPILE_MODES:
        raise ValueError(f"unknown compile mode {mode!r}; expected one of {COMPILE_MODES}")
    return torch.compile(fn, mode=mode, dynamic=False)


def mark_step(mode: Optional[str], device: torch.device) -> None:
    """Tell the CUDA-graph runtime that a new training step begins (the previous step's graph
    outputs may then be reused)."""
    if mode in CUDA_GRAPH_MODES and device.type == "cuda":
        torch.compiler.cudagraph_mark_step_begin()


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, step_loss: Callable, batch, step: int,
               amp: str, compile_mode: Optional[str], device: torch.device,
               scaler: Optional[torch.amp.GradScaler] = None) -> Tuple[torch.Tensor, Terms]:
    """One optimisation step on `batch` (step `step` of the epoch): forward under `--amp`, backward,
    update. Returns the loss and its terms as device tensors, without waiting for the device."""
    mark_step(compile_mode, device)
    optimizer.zero_grad(set_to_none=True)
    with autocast(amp, device):
        loss, terms = step_loss(model, batch, step)
    if scaler is None:
        loss.backward()
        optimizer.step()
    else:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    return loss, terms


class GLMCStep:
    """`step(model, batch, s) -> (loss, terms)` for step s of the epoch set by `begin_epoch`.

    `batch` is ((a1, a2), y), ((b1, b2), y_b): two views of the uniform and of the re-sampled batch.
    """

    def __init__(self, train_counts: Sequence[int], label_weighting: float, options: LossOptions,
                 alpha_of_epoch: Callable[[int], float], image_size: int, seed: int, beta: Optional[float],
                 device: torch.device, compile_mode: Optional[str] = None) -> None:
        self.class_weights = class_balance_weights(train_counts, label_weighting).to(device)
        self.options, self.alpha_of_epoch = options, alpha_of_epoch
        self.image_size, self.seed, self.beta, self.device = image_size, seed, beta, device
        self.loss = compiled(glmc_loss, compile_mode)
        self.mixes: Optional[MixTable] = None
        self.alpha: Optional[torch.Tensor] = None

    def begin_epoch(self, epoch: int, steps: int) -> None:
        """Draw the epoch's mixes (a pure function of seed and epoch) and set its alpha, on the device."""
        self.mixes = epoch_mixes(self.seed, epoch, steps, self.image_size, self.image_size, self.beta, self.device)
        self.alpha = weight_pair(self.alpha_of_epoch(epoch), self.device)

    def __call__(self, model: nn.Module, batch, step: int) -> Tuple[torch.Tensor, Terms]:
        ((a1, a2), y), ((b1, b2), y_b) = batch
        n = min(len(y), len(y_b))  # differ only when --skip_bad_images dropped images
        a1, a2, b1, b2 = (x[:n].to(self.device, non_blocking=True) for x in (a1, a2, b1, b2))
        y, y_b = y[:n].to(self.device, non_blocking=True), y_b[:n].to(self.device, non_blocking=True)
        return self.loss(model, a1, a2, y, b1, b2, y_b, self.mixes.step(step), self.class_weights, self.alpha,
                         self.options)


class CEStep:
    """The plain cross-entropy baseline's step: one view, no mixing."""

    def __init__(self, device: torch.device, compile_mode: Optional[str] = None) -> None:
        self.device, self.loss = device, compiled(ce_loss, compile_mode)

    def begin_epoch(self, epoch: int, steps: int) -> None:
        pass

    def __call__(self, model: nn.Module, batch, step: int) -> Tuple[torch.Tensor, Terms]:
        ((x, y),) = batch
        return self.loss(model, x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True))
