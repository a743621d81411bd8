"""CIFAR variants of ResNet-18/34/50 as released with GLMC.

3x3 stem without max-pool, four stages 64/128/256/512, projection shortcuts
(1x1 conv + BN) where the shape changes. Module names (`conv1.0`,
`conv2_x.N.residual_function.K`, `shortcut`) follow the released checkpoints.
PyTorch's default initialisation is kept, as released.
"""
from typing import List, Type, Union

import torch
import torch.nn.functional as F
from torch import nn

from models.heads import GLMCNetwork


def _conv_bn(in_c: int, out_c: int, kernel: int, stride: int = 1) -> List[nn.Module]:
    return [nn.Conv2d(in_c, out_c, kernel, stride=stride, padding=kernel // 2, bias=False),
            nn.BatchNorm2d(out_c)]


class _Block(nn.Module):
    expansion = 1

    def __init__(self, residual: List[nn.Module], in_c: int, out_c: int, stride: int) -> None:
        super().__init__()
        self.residual_function = nn.Sequential(*residual)
        needs_projection = stride != 1 or in_c != out_c
        self.shortcut = nn.Sequential(*_conv_bn(in_c, out_c, 1, stride)) if needs_projection else nn.Sequential()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.residual_function(x) + self.shortcut(x))


class BasicBlock(_Block):
    expansion = 1

    def __init__(self, in_c: int, planes: int, stride: int = 1) -> None:
        residual = [*_conv_bn(in_c, planes, 3, stride), nn.ReLU(inplace=True), *_conv_bn(planes, planes, 3)]
        super().__init__(residual, in_c, planes, stride)


class Bottleneck(_Block):
    expansion = 4

    def __init__(self, in_c: int, planes: int, stride: int = 1) -> None:
        out_c = planes * self.expansion
        residual = [*_conv_bn(in_c, planes, 1), nn.ReLU(inplace=True),
                    *_conv_bn(planes, planes, 3, stride), nn.ReLU(inplace=True),
                    *_conv_bn(planes, out_c, 1)]
        super().__init__(residual, in_c, out_c, stride)


class ResNetCifar(GLMCNetwork):
    def __init__(self, block: Type[Union[BasicBlock, Bottleneck]], blocks: List[int], num_classes: int) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(*_conv_bn(3, 64, 3), nn.ReLU(inplace=True))
        self.in_c = 64
        self.conv2_x = self._stage(block, 64, blocks[0], 1)
        self.conv3_x = self._stage(block, 128, blocks[1], 2)
        self.conv4_x = self._stage(block, 256, blocks[2], 2)
        self.conv5_x = self._stage(block, 512, blocks[3], 2)
        self._build_heads(512 * block.expansion, num_classes, head_dim=256)

    def _stage(self, block: Type[Union[BasicBlock, Bottleneck]], planes: int, n: int, stride: int) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (n - 1):
            layers.append(block(self.in_c, planes, s))
            self.in_c = planes * block.expansion
        return nn.Sequential(*layers)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x)
        out = self.conv5_x(self.conv4_x(self.conv3_x(self.conv2_x(out))))
        return F.adaptive_avg_pool2d(out, 1).flatten(1)


def resnet18(num_classes: int) -> ResNetCifar:
    return ResNetCifar(BasicBlock, [2, 2, 2, 2], num_classes)


def resnet34(num_classes: int) -> ResNetCifar:
    return ResNetCifar(BasicBlock, [3, 4, 6, 3], num_classes)


def resnet50(num_classes: int) -> ResNetCifar:
    return ResNetCifar(Bottleneck, [3, 4, 6, 3], num_classes)
