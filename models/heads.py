"""The four linear heads every GLMC backbone ends in.

`fc` and `fc_cb` map the pooled feature to class logits; `projection_head`
maps it to z and `contrast_head` maps z to the prediction p used by the
consistency loss. The heads are one-layer `nn.Sequential`s because the released
checkpoints name them `projection_head.0.*` and `contrast_head.0.*`.
"""
from typing import Sequence, Tuple, Union

import torch
from torch import nn


CLASSIFIERS = ("fc_cb", "fc")  # the re-balanced classifier (evaluated as released) and the plain one


class GLMCNetwork(nn.Module):
    """Base of every GLMC network: subclasses define `features(x)` and call `_build_heads`."""

    def _build_heads(self, feature_dim: int, num_classes: int, head_dim: int) -> None:
        # Registration order follows the released checkpoints' key order.
        self.fc = nn.Linear(feature_dim, num_classes)
        self.fc_cb = nn.Linear(feature_dim, num_classes)
        self.contrast_head = nn.Sequential(nn.Linear(head_dim, head_dim))
        self.projection_head = nn.Sequential(nn.Linear(feature_dim, head_dim))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def classifier(self, head: str) -> nn.Linear:
        """The classifier named `head`: 'fc_cb' or 'fc'."""
        if head not in CLASSIFIERS:
            raise ValueError(f"unknown classifier {head!r}; expected one of {CLASSIFIERS}")
        return getattr(self, head)

    def forward(
        self, x: torch.Tensor, train: bool = False, head: Union[str, Sequence[str]] = "fc_cb"
    ) -> Union[torch.Tensor, Tuple[torch.Tensor, ...]]:
        """Evaluation returns the logits of `head` (`fc_cb` as released, or `fc`), or a tuple of logits, one per
        head, when `head` names several (one backbone pass for all); training returns (fc, fc_cb, z, p)."""
        feature = self.features(x)
        if not train:
            if isinstance(head, str):
                return self.classifier(head)(feature)
            return tuple(self.classifier(h)(feature) for h in head)
        z = self.projection_head(feature)
        return self.fc(feature), self.fc_cb(feature), z, self.contrast_head(z)
