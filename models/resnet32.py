"""CIFAR ResNet-32 as released with GLMC.

Three stages of five basic blocks, a 3x3 stem, parameter-free "option A"
shortcuts and global average pooling. The released network has base width 64
(stages 64/128/256, 7.44 M parameters for 10 classes); `width=16` gives the
standard ResNet-32 (0.46 M) used by most other long-tail papers.
"""
import torch
import torch.nn.functional as F
from torch import nn

from models.heads import GLMCNetwork


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = stride != 1 or in_planes != planes
        self.pad = (planes - in_planes) // 2

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        """Option A: subsample by 2 and zero-pad the new channels, no parameters."""
        if not self.downsample:
            return x
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet32(GLMCNetwork):
    def __init__(self, num_classes: int = 10, width: int = 64, blocks_per_stage: int = 5) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        planes = [width, 2 * width, 4 * width]
        self.layer1 = self._stage(width, planes[0], blocks_per_stage, stride=1)
        self.layer2 = self._stage(planes[0], planes[1], blocks_per_stage, stride=2)
        self.layer3 = self._stage(planes[1], planes[2], blocks_per_stage, stride=2)
        self._build_heads(planes[2], num_classes, head_dim=128)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)  # fan-in, as released

    @staticmethod
    def _stage(in_planes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = [BasicBlock(in_planes, planes, stride)]
        layers += [BasicBlock(planes, planes) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return F.adaptive_avg_pool2d(out, 1).flatten(1)
