"""Augmentations of the released code and the two-view wrapper."""
from typing import Callable, Dict, List, Tuple

import torch
from PIL import ImageFilter
from torchvision import transforms as T

CIFAR_STATS: Dict[str, Tuple[Tuple[float, ...], Tuple[float, ...]]] = {
    "cifar10": ((0.49139968, 0.48215827, 0.44653124), (0.24703233, 0.24348505, 0.26158768)),
    "cifar100": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
}


IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
INAT_STATS = ((0.466, 0.471, 0.380), (0.195, 0.194, 0.192))


class RandomGaussianBlur:
    """PIL Gaussian blur with sigma uniform in [low, high], as in the released augmentation."""

    def __init__(self, low: float = 0.1, high: float = 2.0) -> None:
        self.low, self.high = low, high

    def __call__(self, image):
        sigma = self.low + (self.high - self.low) * torch.rand(()).item()
        return image.filter(ImageFilter.GaussianBlur(radius=sigma))


def large_train_transform(size: int, stats) -> Callable:
    """ImageNet-LT / iNat / folder training augmentation."""
    return T.Compose([
        T.RandomResizedCrop(size),
        T.ColorJitter(0.4, 0.4, 0.4, 0.0),
        T.RandomGrayscale(p=0.2),
        T.RandomApply([RandomGaussianBlur(0.1, 2.0)], p=0.5),
        T.RandomHorizontalFlip(),
        T.ToTensor(),
        T.Normalize(*stats),
    ])


def large_test_transform(size: int, stats) -> Callable:
    """Resize 256, centre crop 224 (scaled alike for other sizes)."""
    return T.Compose([T.Resize(round(size * 256 / 224)), T.CenterCrop(size), T.ToTensor(), T.Normalize(*stats)])


def cifar_train_transform(dataset: str) -> Callable:
    mean, std = CIFAR_STATS[dataset]
    return T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(),
                      T.ToTensor(), T.Normalize(mean, std)])


def cifar_test_transform(dataset: str) -> Callable:
    mean, std = CIFAR_STATS[dataset]
    return T.Compose([T.ToTensor(), T.Normalize(mean, std)])


class TwoViews:
    """Every training image yields two independently augmented views of itself."""

    def __init__(self, transform: Callable) -> None:
        self.transform = transform

    def __call__(self, image) -> List[torch.Tensor]:
        return [self.transform(image), self.transform(image)]
