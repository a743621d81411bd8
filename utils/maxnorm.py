"""MaxNorm (Alshammari et al., CVPR 2022): cap the L2 norm of each classifier row.

`max_norm_threshold` sets the cap once from the rows' norms, min + thresh * (max - min);
`project_rows_` scales the rows above it onto it and leaves biases alone. The
second stage re-trains only the classifier on frozen features with the
class-balanced focal loss, projecting after every update.
"""
import math
from typing import Dict, Sequence

import torch
import torch.nn.functional as F
from torch import nn


def max_norm_threshold(weight: torch.Tensor, thresh: float) -> float:
    norms = weight.detach().norm(dim=1)
    return float(norms.min() + thresh * (norms.max() - norms.min()))


@torch.no_grad()
def project_rows_(weight: torch.Tensor, cap: float) -> None:
    """In place: rows with norm above `cap` are scaled onto it, the others are unchanged."""
    norms = weight.norm(dim=1, keepdim=True)
    weight.mul_(torch.where(norms > cap, cap / norms.clamp(min=1e-12), torch.ones_like(norms)))


def class_balanced_weights(counts: Sequence[int], beta: float) -> torch.Tensor:
    """Cui et al. 2019: (1 - beta) / (1 - beta ** n_c), normalised to sum to C."""
    n = torch.tensor(counts, dtype=torch.float64).clamp(min=1)
    w = (1.0 - beta) / (1.0 - beta ** n)
    return (w / w.sum() * len(counts)).float()


def cb_focal_loss(logits: torch.Tensor, y: torch.Tensor, class_weights: torch.Tensor, gamma: float) -> torch.Tensor:
    """Mean over the batch of w_y * (1 - p_y) ** gamma * -log p_y (softmax probabilities)."""
    log_p = F.log_softmax(logits.float(), dim=1).gather(1, y[:, None]).squeeze(1)
    return (class_weights[y] * (1.0 - log_p.exp()) ** gamma * -log_p).mean()


@torch.no_grad()
def extract_features(model: nn.Module, loader, device: torch.device):
    """Backbone features (BatchNorm in evaluation mode) and labels of every image in `loader`."""
    model.eval()
    feats, labels = [], []
    for images, y in loader:
        feats.append(model.features(images.to(device)).float())
        labels.append(y.to(device))
    return torch.cat(feats), torch.cat(labels)


def train_classifier_max_norm(classifier: nn.Linear, features: torch.Tensor, labels: torch.Tensor,
                              counts: Sequence[int], epochs: int = 10, lr: float = 0.01, momentum: float = 0.9,
                              weight_decay: float = 0.1, thresh: float = 0.1, batch_size: int = 128,
                              cb_beta: float = 0.9999, focal_gamma: float = 2.0, seed: int = 0) -> Dict[str, float]:
    """Re-train `classifier` on frozen features, projecting its rows after each update."""
    cap = max_norm_threshold(classifier.weight, thresh)
    weights = class_balanced_weights(counts, cb_beta).to(features.device)
    opt = torch.optim.SGD(classifier.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(len(labels) / batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 0.5 * (1 + math.cos(math.pi * e / epochs)))
    g = torch.Generator().manual_seed(seed)
    loss = torch.zeros(())
    for _ in range(epochs):
        order = torch.randperm(len(labels), generator=g).to(features.device)
        for i in range(steps_per_epoch):
            idx = order[i * batch_size:(i + 1) * batch_size]
            loss = cb_focal_loss(classifier(features[idx]), labels[idx], weights, focal_gamma)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            project_rows_(classifier.weight, cap)
        sched.step()
    return {"cap": cap, "final_loss": float(loss.detach())}
