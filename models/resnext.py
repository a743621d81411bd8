"""ResNeXt-50 32x4d for ImageNet-LT and iNaturalist 2018.

torchvision's layout and initialisation (Kaiming-normal fan-out convolutions,
BatchNorm weight 1 and bias 0), randomly initialised, with the four GLMC heads
in place of torchvision's classifier. Parameter names equal the released
checkpoints' (`conv1`, `bn1`, `layer1..4`, `fc`, `fc_cb`, ...).
"""
import torch
from torch import nn
from torchvision.models import resnext50_32x4d as tv_resnext50_32x4d

from models.heads import GLMCNetwork


class ResNeXt50(GLMCNetwork):
    def __init__(self, num_classes: int) -> None:
        super().__init__()
        tv = tv_resnext50_32x4d(weights=None)
        self.conv1, self.bn1, self.relu, self.maxpool = tv.conv1, tv.bn1, tv.relu, tv.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = tv.layer1, tv.layer2, tv.layer3, tv.layer4
        self._build_heads(tv.fc.in_features, num_classes, head_dim=256)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return nn.functional.adaptive_avg_pool2d(x, 1).flatten(1)
