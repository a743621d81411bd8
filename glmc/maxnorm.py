"""MaxNorm (Alshammari et al., CVPR 2022, "Long-Tailed Recognition via Weight Balancing").

MaxNorm caps the L2 norm of each classifier row: `max_norm_threshold` sets the cap
once, from the rows' norms before the stage, as min + thresh * (max - min);
`project_rows_` scales the rows above it onto it and leaves biases alone.

The "+ MaxNorm" rows of GLMC come from a second stage that re-trains only the
classifier (`fc_cb`; a run evaluated with `fc`, such as the CE baseline, has
`fc` re-trained) with the network frozen. The GLMC authors' settings are
unpublished, so `StageOptions()` follows the weight-balancing authors' own
second-stage demo (CIFAR-100-LT):

- inputs: the augmented training images (random crop + flip), batch 64, uniform
  sampling, through the frozen network in train mode, so BatchNorm running
  statistics keep moving during the stage;
- loss: the class-balanced loss of Cui et al. 2019 in its "softmax" form, a
  class-weighted binary cross-entropy between softmax(logits) and the one-hot
  label (beta 0.9999; the demo passes gamma 2, which this form does not use);
- SGD lr 0.01, momentum 0.9, weight decay 0.1, cosine annealing to 0 over 10
  epochs, the scheduler stepped at the start of each epoch (epoch 1 trains at
  the cosine's second value, the last epoch at lr 0);
- the projection once per epoch, after the training phase, thresh 0.1;
- the epoch with the best per-class-mean test accuracy is kept: a choice made
  on the test set, reported beside the last epoch.

Each choice has a named alternative (`LOSSES`, `PROJECTIONS`, `INPUTS`,
`BN_MODES`, `LR_STEPS`) so that other recipes can be compared with it.
"""
import copy
import dataclasses
import itertools
import math
from typing import Callable, Dict, Iterable, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

LOSSES = {"cb_softmax": "class-balanced softmax loss (weighted BCE on softmax outputs; reference)",
          "cb_focal": "class-balanced softmax focal loss, gamma --focal_gamma"}
PROJECTIONS = {"epoch": "project the rows once per epoch, after its training phase (reference)",
               "step": "project the rows after every update"}
INPUTS = {"images": "augmented training images through the frozen network (reference)",
          "features": "features of the un-augmented training images, computed once (BatchNorm frozen)"}
BN_MODES = {"train": "BatchNorm in train mode: batch statistics, running statistics updated (reference)",
            "frozen": "BatchNorm in evaluation mode: running statistics fixed"}
LR_STEPS = {"start": "cosine stepped at the start of each epoch: the last epoch trains at lr 0 (reference)",
            "end": "cosine stepped at the end of each epoch: the first epoch trains at --lr"}


@dataclasses.dataclass
class StageOptions:
    """The second stage's settings; the defaults are the reference demo's."""
    epochs: int = 10
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.1
    batch_size: int = 64
    thresh: float = 0.1
    cb_beta: float = 0.9999
    focal_gamma: float = 2.0
    loss: str = "cb_softmax"
    project: str = "epoch"
    inputs: str = "images"
    bn: str = "train"
    lr_step: str = "start"

    def variant(self) -> str:
        """'reference' for the defaults, else the options that differ, e.g. 'loss=cb_focal,project=step'."""
        reference, changed = StageOptions(), []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value == getattr(reference, f.name) or (f.name == "focal_gamma" and self.loss != "cb_focal"):
                continue  # gamma only matters to the focal loss
            changed.append(f"{f.name}={value:g}" if isinstance(value, float) else f"{f.name}={value}")
        return ",".join(changed) or "reference"


def max_norm_threshold(weight: torch.Tensor, thresh: float) -> float:
    norms = weight.detach().norm(dim=1)
    return float(norms.min() + thresh * (norms.max() - norms.min()))


@torch.no_grad()
def project_rows_(weight: torch.Tensor, cap: float) -> None:
    """In place: rows with norm above `cap` are scaled onto it, the others are unchanged."""
    norms = weight.norm(dim=1, keepdim=True)
    weight.mul_(torch.where(norms > cap, cap / norms.clamp(min=1e-12), torch.ones_like(norms)))


@torch.no_grad()
def tau_normalize_rows_(weight: torch.Tensor, tau: float) -> None:
    """In place, tau-normalisation (Kang et al. 2020): each row w_c becomes w_c / ||w_c|| ** tau."""
    weight.div_(weight.norm(dim=1, keepdim=True).clamp(min=1e-12) ** tau)


def class_balanced_weights(counts: Sequence[int], beta: float) -> torch.Tensor:
    """Cui et al. 2019: (1 - beta) / (1 - beta ** n_c), normalised to sum to C."""
    n = torch.tensor(counts, dtype=torch.float64).clamp(min=1)
    w = (1.0 - beta) / (1.0 - beta ** n)
    return (w / w.sum() * len(counts)).float()


def cb_softmax_loss(logits: torch.Tensor, y: torch.Tensor, class_weights: torch.Tensor) -> torch.Tensor:
    """Mean over batch and classes of w_y * BCE(softmax(logits)_c, onehot(y)_c), Cui et al.'s "softmax" form."""
    probs = logits.float().softmax(dim=1)
    target = F.one_hot(y, probs.shape[1]).float()
    return F.binary_cross_entropy(probs, target, weight=class_weights[y][:, None].expand_as(probs))


def cb_focal_loss(logits: torch.Tensor, y: torch.Tensor, class_weights: torch.Tensor, gamma: float) -> torch.Tensor:
    """Mean over the batch of w_y * (1 - p_y) ** gamma * -log p_y (softmax probabilities)."""
    log_p = F.log_softmax(logits.float(), dim=1).gather(1, y[:, None]).squeeze(1)
    return (class_weights[y] * (1.0 - log_p.exp()) ** gamma * -log_p).mean()


def stage_lr(opts: StageOptions, epoch: int) -> float:
    """The learning rate of 0-based `epoch`: cosine from --lr to 0 over the stage."""
    k = epoch + 1 if opts.lr_step == "start" else epoch
    return opts.lr * 0.5 * (1.0 + math.cos(math.pi * k / opts.epochs))


def class_mean(per_class: Sequence[Optional[float]]) -> float:
    """Mean of the per-class accuracies of the classes present in the test set."""
    present = [v for v in per_class if v is not None]
    return float(np.mean(present)) if present else 0.0


@torch.no_grad()
def extract_features(model: nn.Module, loader: Iterable, device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
    """Backbone features (BatchNorm in evaluation mode) and labels of every image in `loader`."""
    model.eval()
    feats, labels = [], []
    for images, y in loader:
        feats.append(model.features(images.to(device)).float())
        labels.append(y.to(device))
    return torch.cat(feats), torch.cat(labels)


def feature_batches(features: torch.Tensor, labels: torch.Tensor, batch_size: int,
                    seed: int) -> Callable[[int], Iterable[Tuple[torch.Tensor, torch.Tensor]]]:
    """Epoch -> shuffled (features, labels) batches; the order is fixed by (seed, epoch)."""
    def epoch_batches(epoch: int):
        order = torch.from_numpy(np.random.default_rng([seed, epoch]).permutation(len(labels))).to(labels.device)
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            yield features[idx], labels[idx]
    return epoch_batches


def train_second_stage(model: nn.Module, epoch_batches: Callable[[int], Iterable[Tuple[torch.Tensor, torch.Tensor]]],
                       evaluate: Callable[[nn.Module], Dict], counts: Sequence[int], opts: StageOptions,
                       device: torch.device, log: Callable[[str], None] = print, head_name: str = "fc_cb",
                       resume: Optional[Dict] = None, stop: Callable[[], bool] = lambda: False,
                       on_step: Callable[[int, int, int], None] = lambda epoch, step, images: None) -> Dict:
    """Re-train the classifier `head_name` (the run's evaluation head: `fc_cb` for GLMC) with everything
    else frozen; evaluate after every epoch.

    `epoch_batches(epoch)` yields (images, labels), or (features, labels) with
    `opts.inputs == "features"`, the same ones whenever it is called for an epoch. Returns the cap, the
    per-epoch history, the last epoch's figures, and the best epoch (by per-class-mean test accuracy, as
    the reference keeps it) with its figures and state_dict.

    After each step `on_step(epoch, steps done in it, images in the step)` is called, then `stop()`: when it
    says so, the stage returns {"stopped": state} at once, and `resume=state` continues it exactly (the
    network with its moving BatchNorm statistics, the optimizer, the epoch's loss so far, the history and
    the best epoch; the steps done are skipped in the epoch's batches, which are the same batches again).
    """
    head = getattr(model, head_name)
    for p in model.parameters():
        p.requires_grad_(False)
    for p in head.parameters():
        p.requires_grad_(True)
    optimizer = torch.optim.SGD(head.parameters(), lr=opts.lr, momentum=opts.momentum,
                                weight_decay=opts.weight_decay)
    if resume:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        cap, history, best = resume["cap"], list(resume["history"]), dict(resume["best"])
        first_epoch, skip = resume["epoch"], resume["step"]
    else:
        cap, history, best, first_epoch, skip = max_norm_threshold(head.weight, opts.thresh), [], {}, 0, 0
    class_weights = class_balanced_weights(counts, opts.cb_beta).to(device)
    features_of = (lambda x: x) if opts.inputs == "features" else model.features
    result: Dict = {}
    for epoch in range(first_epoch, opts.epochs):
        lr = stage_lr(opts, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        model.train(opts.bn == "train")
        loss_sum, batches = torch.zeros((), device=device), 0
        if skip:
            loss_sum, batches = resume["loss_sum"].to(device), skip
        for x, y in itertools.islice(epoch_batches(epoch), skip, None):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with torch.no_grad():
                feats = features_of(x)
            logits = head(feats.float())
            loss = (cb_softmax_loss(logits, y, class_weights) if opts.loss == "cb_softmax"
                    else cb_focal_loss(logits, y, class_weights, opts.focal_gamma))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if opts.project == "step":
                project_rows_(head.weight, cap)
            loss_sum += loss.detach()
            batches += 1
            on_step(epoch, batches, len(y))
            if stop():
                return {"stopped": {"epoch": epoch, "step": batches, "loss_sum": loss_sum.cpu(),
                                    "model": copy.deepcopy(model.state_dict()),
                                    "optimizer": copy.deepcopy(optimizer.state_dict()), "cap": cap,
                                    "history": history, "best": best}}
        skip = 0
        if opts.project == "epoch":
            project_rows_(head.weight, cap)
        result = evaluate(model)
        entry = {"epoch": epoch + 1, "lr": lr, "loss": float(loss_sum) / max(batches, 1), "top1": result["top1"],
                 "class_mean": class_mean(result["per_class"])}
        history.append(entry)
        log(f"stage epoch {epoch + 1}/{opts.epochs}: lr {lr:.5f}, loss {entry['loss']:.4f}, top-1 "
            f"{entry['top1']:.2f}, per-class mean {entry['class_mean']:.2f}")
        if not best or entry["class_mean"] > best["class_mean"]:
            best = {"epoch": epoch + 1, "class_mean": entry["class_mean"], "result": result,
                    "state_dict": copy.deepcopy(model.state_dict())}
    return {"cap": cap, "history": history, "last": result, "best": best}
