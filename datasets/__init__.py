"""Data sets for GLMC: `build_data(args)` returns the training and test sets and the class counts.

`datasets/` imports `utils/` (errors, the per-class weights of the re-sampling loader), never
`glmc/` (the method) or `models/`.
"""
import hashlib
import os
import sys
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from datasets.cifar_lt import CIFAR_INFO, find_cifar_folder, load_cifar_lt, read_cifar_split
from datasets.image_files import (ImageFileDataset, collate_fn_for, find_eval_split, read_image_list,
                                   scan_class_folders)
from datasets.loaders import ImageArrayDataset, TrainLoader, class_counts
from datasets.tensor_path import TensorTestLoader, TensorTrainLoader
from datasets.transforms import (CIFAR_STATS, IMAGENET_STATS, INAT_STATS, TwoViews, cifar_test_transform,
                                 cifar_train_transform, large_test_transform, large_train_transform)
from utils.errors import UsageError
from utils.progress import plural

LIST_DATASETS = {
    # name: (classes, default train list, default test list, normalisation)
    "ImageNet-LT": (1000, "ImageNet_LT_train.txt", "ImageNet_LT_test.txt", IMAGENET_STATS),
    "iNaturelist2018": (8142, "iNaturalist18_train.txt", "iNaturalist18_val.txt", INAT_STATS),
}
FOLDER_DATASETS = ("folder", "nepes")
DATASETS = tuple(CIFAR_INFO) + tuple(LIST_DATASETS) + FOLDER_DATASETS
LISTS_FOLDER = "data_txt"  # the image lists' default folder, inside --root
EVAL_BATCH_SIZE = 256


@dataclass
class DataBundle:
    train: Dataset  # yields ([view1, view2], label), or (view, label) with one view
    test: Dataset
    train_counts: List[int]
    num_classes: int
    image_size: int
    class_names: Optional[List[str]] = None
    files: List[Tuple[str, List[str]]] = field(default_factory=list)  # (name, paths) for the preflight check
    fingerprint: str = ""  # identifies the training images and labels (not where they are stored)
    # identifies the data the training set is drawn from, whatever the seed: the whole CIFAR release's training
    # images (each seed draws its own long-tailed subset), else the training set itself
    source_fingerprint: str = ""


def class_count_line(counts: List[int], names: Optional[List[str]] = None) -> str:
    """The training images per class, in one line, each beside its class name when the data set has names
    (the first and last ten classes for more than 100)."""
    if names and len(names) == len(counts) and len(counts) <= 100:
        shown = ", ".join(f"{name} {n}" for name, n in zip(names, counts))
    elif len(counts) <= 100:
        shown = str(counts)
    else:
        shown = (f"{counts[:10]} ... {counts[-10:]} (max {max(counts)}, min {min(counts)}; all {len(counts)} "
                 "in args.json)")
    return f"training images per class ({sum(counts)} in all): {shown}"


def fingerprint_arrays(images, labels) -> str:
    """SHA-1 of the training images' pixels and labels, in order."""
    h = hashlib.sha1()
    h.update(np.ascontiguousarray(images).tobytes())
    h.update(np.asarray(labels, dtype=np.int64).tobytes())
    return h.hexdigest()


def fingerprint_files(paths: List[str], labels: List[int], root: str) -> str:
    """SHA-1 of the training list: paths relative to the data root, and labels, in order."""
    h = hashlib.sha1()
    for path, label in zip(paths, labels):
        h.update(f"{os.path.relpath(path, root)}\t{label}\n".encode())
    return h.hexdigest()


def canonical_dataset(name: str) -> str:
    """One name per data set: 'nepes' is the folder data set under its released name."""
    return "folder" if name in FOLDER_DATASETS else name


def data_seed(args) -> int:
    """The seed that picks the CIFAR-LT images: --data_seed, else --seed (as released)."""
    return args.seed if getattr(args, "data_seed", None) is None else args.data_seed


def default_list_paths(dataset: str, root: str) -> Tuple[str, str]:
    """`<root>/data_txt/<standard list name>` for training and test."""
    _, train, test, _ = LIST_DATASETS[dataset]
    return os.path.join(root, LISTS_FOLDER, train), os.path.join(root, LISTS_FOLDER, test)


def _check_num_classes(args, found: int, what: str) -> int:
    if args.num_classes is not None and args.num_classes != found:
        raise UsageError(f"--num_classes {args.num_classes} does not match {what}, which has {found} classes")
    return found


def check_class_counts(counts: List[int], names: Optional[List[str]], allow_empty: bool, few: int = 5) -> None:
    """Stop on a class with no training image (unless allowed); name the classes with fewer than `few`."""
    label = (lambda c: f"{c} ({names[c]})") if names else str
    empty = [label(c) for c, n in enumerate(counts) if n == 0]
    if empty and not allow_empty:
        raise UsageError(f"{plural(len(empty), 'class', 'classes')} without a training image: {', '.join(empty[:10])}"
                         f"{' ...' if len(empty) > 10 else ''}. Fix the data, or pass --allow_empty_classes")
    scarce = [f"{label(c)}: {n}" for c, n in enumerate(counts) if 0 < n < few]
    if scarce:
        print(f"warning: {plural(len(scarce), 'class', 'classes')} with fewer than {few} training images: "
              f"{', '.join(scarce[:10])}{' ...' if len(scarce) > 10 else ''}", file=sys.stderr)


def build_data(args, views: int = 2) -> DataBundle:
    """The long-tailed training set (`views` augmented views per image) and the test set."""
    wrap = TwoViews if views == 2 else (lambda t: t)
    if args.dataset in CIFAR_INFO:
        num_classes = _check_num_classes(args, CIFAR_INFO[args.dataset]["num_classes"], args.dataset)
        arrays = load_cifar_lt(args.root, args.dataset, args.imbanlance_rate, args.split, data_seed(args),
                               download=not args.no_download)
        counts = class_counts(arrays["train"].labels, num_classes)
        check_class_counts(counts, arrays["class_names"], getattr(args, "allow_empty_classes", False))
        train = ImageArrayDataset(arrays["train"].images, arrays["train"].labels,
                                  wrap(cifar_train_transform(args.dataset)))
        test = ImageArrayDataset(arrays["test"].images, arrays["test"].labels, cifar_test_transform(args.dataset))
        return DataBundle(train, test, counts, num_classes, image_size=32,
                          class_names=arrays["class_names"],
                          fingerprint=fingerprint_arrays(arrays["train"].images, arrays["train"].labels),
                          source_fingerprint=fingerprint_arrays(arrays["release"].images, arrays["release"].labels))

    if not os.path.isdir(args.root):
        raise UsageError(f"--root {args.root!r} is not a folder; for {args.dataset} it holds the images "
                         "(see data/README.md)")
    skip = args.skip_bad_images
    if args.dataset in LIST_DATASETS:
        num_classes, _, _, stats = LIST_DATASETS[args.dataset]
        num_classes = args.num_classes or num_classes
        train_list, test_list = default_list_paths(args.dataset, args.root)
        train_list, test_list = args.dir_train_txt or train_list, args.dir_test_txt or test_list
        train_paths, train_labels = read_image_list(train_list, args.root, num_classes, "--dir_train_txt")
        test_paths, test_labels = read_image_list(test_list, args.root, num_classes, "--dir_test_txt")
        found = max(list(train_labels) + list(test_labels), default=-1) + 1
        if found != num_classes:
            source = "given" if args.num_classes else f"{args.dataset}'s"
            raise UsageError(f"--num_classes {num_classes} ({source}) does not match the lists {train_list!r} and "
                             f"{test_list!r}, whose labels run from 0 to {found - 1}: {found} classes")
        names = None
    else:
        stats = IMAGENET_STATS
        train_paths, train_labels, names = scan_class_folders(os.path.join(args.root, "train"))
        test_paths, test_labels, _ = scan_class_folders(find_eval_split(args.root), names)
        num_classes = _check_num_classes(args, len(names), f"the class folders of {args.root!r}")
    counts = class_counts(train_labels, num_classes)
    check_class_counts(counts, names, getattr(args, "allow_empty_classes", False))
    size = args.image_size
    train = ImageFileDataset(train_paths, train_labels, wrap(large_train_transform(size, stats)), skip_bad=skip)
    test = ImageFileDataset(test_paths, test_labels, large_test_transform(size, stats), skip_bad=skip)
    fingerprint = fingerprint_files(train_paths, train_labels, args.root)
    return DataBundle(train, test, counts, num_classes, size, names,
                      files=[("training images", train_paths), ("test images", test_paths)],
                      fingerprint=fingerprint, source_fingerprint=fingerprint)


def source_fingerprint(dataset: str, root: str) -> Optional[str]:
    """The `source_fingerprint` runs of `dataset` under `root` record, computed without building a run's data
    (None when the data is not there): the CIFAR release's training images, or the default training list."""
    if dataset in CIFAR_INFO:
        folder = find_cifar_folder(root, dataset)
        if folder is None:
            return None
        release = read_cifar_split(folder, dataset, "train")
        return fingerprint_arrays(release.images, release.labels)
    if dataset in LIST_DATASETS:
        train_list = default_list_paths(dataset, root)[0]
        if not os.path.isfile(train_list):
            return None
        paths, labels = read_image_list(train_list, root, LIST_DATASETS[dataset][0], "--dir_train_txt")
        return fingerprint_files(paths, labels, root)
    return None


def plain_training_set(data: DataBundle) -> Dataset:
    """The training images with the test transform (no augmentation), one view each."""
    if isinstance(data.train, ImageArrayDataset):
        return ImageArrayDataset(data.train.images, np.asarray(data.train.targets), data.test.transform)
    return ImageFileDataset(data.train.paths, data.train.targets, data.test.transform, skip_bad=data.train.skip_bad)


def build_test_loader(test: Dataset, workers: int, pin_memory: bool = False, rank: int = 0, world: int = 1):
    """The test set in order; with `world > 1`, rank r evaluates images r, r + world, ... (no overlap)."""
    subset = test if world == 1 else Subset(test, list(range(rank, len(test), world)))
    return DataLoader(subset, batch_size=EVAL_BATCH_SIZE, shuffle=False, num_workers=workers,
                      pin_memory=pin_memory, collate_fn=collate_fn_for(test))


def uses_tensor_path(args) -> bool:
    """`--data_path tensor` applies to CIFAR; other data sets always use the PIL path."""
    return args.data_path == "tensor" and args.dataset in CIFAR_INFO


def build_loaders(data: DataBundle, args, device: torch.device, rank: int = 0, world: int = 1):
    """(training loader, test loader) of a training run: GLMC pairs two views of the uniform batch
    with the class re-sampled one; the CE baseline takes one view of the uniform batch."""
    glmc = args.method != "ce"
    return make_loaders(data, args, device, args.resample_weighting if glmc else None, 2 if glmc else 1,
                        rank, world)


def make_loaders(data: DataBundle, args, device: torch.device, resample: Optional[float], views: int,
                 rank: int = 0, world: int = 1):
    """(training loader, test loader) for this process: `-b` is the global batch, split across processes;
    `resample` None means no class re-sampled partner batch. `data` must hold `views` views per image."""
    per_rank = args.batch_size // world
    if uses_tensor_path(args):
        mean, std = CIFAR_STATS[args.dataset]
        train = TensorTrainLoader(data.train.images, data.train.targets, data.train_counts, per_rank, resample,
                                  args.seed, device, mean, std, views=views, rank=rank, world=world)
        test = TensorTestLoader(data.test.images, data.test.targets, device, mean, std, EVAL_BATCH_SIZE,
                                indices=range(rank, len(data.test), world))
        return train, test
    pin = device.type == "cuda"
    train = TrainLoader(data.train, data.train_counts, per_rank, resample, args.workers, args.seed,
                        pin_memory=pin, rank=rank, world=world)
    return train, build_test_loader(data.test, args.workers, pin, rank, world)
