"""Model registry: `build_model(arch, num_classes, width)`. `models/` imports `utils/` (checkpoint
loading, errors), never `glmc/` (the method) or `datasets/`."""
from typing import Callable, Dict

from torch import nn

from utils.checkpoint import load_weights

from models.resnet32 import ResNet32
from models.resnet_cifar import resnet18, resnet34, resnet50
from models.resnext import ResNeXt50

ARCHS: Dict[str, Callable[..., nn.Module]] = {
    "resnet32": ResNet32,
    "resnet18": resnet18,
    "resnet34": resnet34,
    "resnet50": resnet50,
    "resnext50_32x4d": ResNeXt50,
}
RESNET32_RELEASED_WIDTH = 64


def build_model(arch: str, num_classes: int, width: int = RESNET32_RELEASED_WIDTH) -> nn.Module:
    """Build a GLMC network; `width` is the base width of resnet32 (64 released, 16 standard)."""
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHS)}")
    if arch == "resnet32":
        return ResNet32(num_classes, width=width)
    if width != RESNET32_RELEASED_WIDTH:
        raise ValueError(f"--width applies to resnet32 only, not to {arch!r}")
    return ARCHS[arch](num_classes)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def model_from_checkpoint(checkpoint: Dict, source: str, arch: str, num_classes: int, width: int) -> nn.Module:
    """Build `arch` and load the checkpoint's weights into it (on the CPU)."""
    model = build_model(arch, num_classes, width)
    load_weights(model, checkpoint["state_dict"], source)
    return model
