"""Augmentations (SPEC §2) and the two-view wrapper."""
from typing import Callable, Dict, List, Tuple

import torch
from torchvision import transforms as T

CIFAR_STATS: Dict[str, Tuple[Tuple[float, ...], Tuple[float, ...]]] = {
    "cifar10": ((0.49139968, 0.48215827, 0.44653124), (0.24703233, 0.24348505, 0.26158768)),
    "cifar100": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
}


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
