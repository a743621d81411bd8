"""The four linear heads every GLMC backbone ends in.

`fc` and `fc_cb` map the pooled feature to class logits; `projection_head`
maps it to z and `contrast_head` maps z to the prediction p used by the
consistency loss. The heads are one-layer `nn.Sequential`s because the released
checkpoints name them `projection_head.0.*` and `contrast_head.0.*`.
"""
from typing import Tuple, Union

import torch
from torch import nn


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

    def forward(
        self, x: torch.Tensor, train: bool = False, head: str = "fc_cb"
    ) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Evaluation returns the logits of `head` (`fc_cb` as released, or `fc`); training returns (fc, fc_cb, z, p)."""
        feature = self.features(x)
        if not train:
            return self.fc(feature) if head == "fc" else self.fc_cb(feature)
        z = self.projection_head(feature)
        return self.fc(feature), self.fc_cb(feature), z, self.contrast_head(z)
