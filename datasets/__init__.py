"""Data sets for GLMC: `build_data(args)` returns the training and test sets and the class counts."""
from dataclasses import dataclass
from typing import List

from torch.utils.data import DataLoader, Dataset

from datasets.cifar_lt import CIFAR_INFO, load_cifar_lt
from datasets.loaders import ImageArrayDataset, class_counts
from datasets.transforms import TwoViews, cifar_test_transform, cifar_train_transform
from utils.errors import UsageError

DATASETS = tuple(CIFAR_INFO)
EVAL_BATCH_SIZE = 256


@dataclass
class DataBundle:
    train: Dataset  # yields ([view1, view2], label), or (view, label) with one view
    test: Dataset
    train_counts: List[int]
    num_classes: int
    image_size: int


def build_data(args, views: int = 2) -> DataBundle:
    """The long-tailed training set (`views` augmented views per image) and the balanced test set."""
    if args.dataset not in CIFAR_INFO:
        raise UsageError(f"unknown data set {args.dataset!r}; choose one of {', '.join(DATASETS)}")
    num_classes = CIFAR_INFO[args.dataset]["num_classes"]
    if args.num_classes is not None and args.num_classes != num_classes:
        raise UsageError(f"--num_classes {args.num_classes} does not match {args.dataset}, "
                         f"which has {num_classes} classes")
    arrays = load_cifar_lt(args.root, args.dataset, args.imbanlance_rate, args.split, args.seed,
                           download=not args.no_download)
    augment = cifar_train_transform(args.dataset)
    train = ImageArrayDataset(arrays["train"].images, arrays["train"].labels,
                              TwoViews(augment) if views == 2 else augment)
    test = ImageArrayDataset(arrays["test"].images, arrays["test"].labels, cifar_test_transform(args.dataset))
    return DataBundle(train, test, class_counts(train.targets, num_classes), num_classes, image_size=32)


def build_test_loader(test: Dataset, workers: int, pin_memory: bool = False) -> DataLoader:
    return DataLoader(test, batch_size=EVAL_BATCH_SIZE, shuffle=False, num_workers=workers,
                      pin_memory=pin_memory)
