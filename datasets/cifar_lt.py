"""CIFAR-10-LT and CIFAR-100-LT from the python-pickle releases, as in the released GLMC code.

The long-tailed training set keeps `int(n_max * rate ** (c / (C - 1)))` images
of class c. Which images: the released code draws them with numpy's global
generator seeded with `--seed`, class by class, choice without replacement
(`split="released"`); most other long-tail papers (Cao et al. 2019) shuffle each
class with one generator seeded 0 and keep the first n (`split="cao"`). The
authors' first release drew with replacement (duplicates; the paper's "GLMC"
column, `split="replacement"`).
"""
import os
import pickle
import shutil
import tempfile
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np

from utils.errors import UsageError
from utils.run_lock import RunLock

CIFAR_INFO: Dict[str, Dict] = {
    "cifar10": {
        "folder": "cifar-10-batches-py",
        "train": [f"data_batch_{i}" for i in range(1, 6)],
        "test": ["test_batch"],
        "label_key": "labels",
        "meta": ("batches.meta", "label_names"),
        "num_classes": 10,
        "url": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    },
    "cifar100": {
        "folder": "cifar-100-python",
        "train": ["train"],
        "test": ["test"],
        "label_key": "fine_labels",
        "meta": ("meta", "fine_label_names"),
        "num_classes": 100,
        "url": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    },
}
SPLITS = ("released", "cao", "replacement")


@dataclass
class ImageArray:
    """Images as uint8 HWC array with integer labels."""

    images: np.ndarray
    labels: np.ndarray


def img_num_per_class(n_max: float, num_classes: int, rate: float) -> List[int]:
    """Per-class counts of the long-tailed training set: int(n_max * rate ** (c / (C - 1)))."""
    if num_classes == 1:
        return [int(n_max)]
    return [int(n_max * rate ** (c / (num_classes - 1))) for c in range(num_classes)]


def select_long_tailed(labels: np.ndarray, counts: Sequence[int], split: str, seed: int) -> np.ndarray:
    """Indices of the long-tailed subset, concatenated in class order."""
    if split in ("released", "replacement"):
        rng = np.random.RandomState(seed)
        pick = lambda idx, n: rng.choice(idx, n, replace=split == "replacement")  # noqa: E731
    elif split == "cao":
        rng = np.random.RandomState(0)

        def pick(idx: np.ndarray, n: int) -> np.ndarray:
            idx = idx.copy()
            rng.shuffle(idx)
            return idx[:n]
    else:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    chosen = [pick(np.flatnonzero(labels == c), n) for c, n in enumerate(counts)]
    return np.concatenate(chosen)


def _find_case_insensitive(folder: str, name: str) -> Optional[str]:
    if not os.path.isdir(folder):
        return None
    for entry in os.listdir(folder):
        if entry.lower() == name.lower():
            return os.path.join(folder, entry)
    return None


def find_cifar_folder(root: str, dataset: str) -> Optional[str]:
    """The batches folder: `root` itself or its child, names matched in any case."""
    info = CIFAR_INFO[dataset]
    if _find_case_insensitive(root, info["train"][0]) and _find_case_insensitive(root, info["test"][0]):
        return root
    child = _find_case_insensitive(root, info["folder"])
    if child and _find_case_insensitive(child, info["train"][0]):
        return child
    return None


def missing_data_message(root: str, dataset: str, reason: str) -> str:
    info = CIFAR_INFO[dataset]
    files = ", ".join(info["train"] + info["test"])
    return (
        f"{dataset} not found under --root {root!r} ({reason}). Expected the python-pickle release: "
        f"either --root pointing at a folder that holds '{info['folder']}/' (any letter case) with "
        f"the files {files}, or --root pointing at that folder itself. Get it from {info['url']} "
        f"and unpack it there, e.g. '{os.path.join(root, info['folder'])}/{info['train'][0]}'."
    )


def download_cifar(root: str, dataset: str) -> None:
    """Download and unpack the release into `root`, as the released code does, safely with any number of
    processes doing the same (the runs of a sweep, ranks of several jobs):

    - a lock on `root` lets one process download at a time; the others wait, then find the release there;
    - the archive is fetched and unpacked in a temporary folder of `root` and renamed into place, so that
      nobody ever reads a half-written file;
    - a failure removes that temporary folder and the folders this process created, never a file of another.
    """
    from torchvision.datasets.utils import download_and_extract_archive

    url = CIFAR_INFO[dataset]["url"]
    created, folder = [], os.path.abspath(root)
    while not os.path.exists(folder):
        created.append(folder)
        folder = os.path.dirname(folder)
    try:
        os.makedirs(root, exist_ok=True)
    except OSError as exc:
        raise UsageError(missing_data_message(root, dataset, f"the folder cannot be made: {exc.strerror}")) from exc
    lock = RunLock(root, "data root").wait(lambda message: print(message + " (it is downloading the data)",
                                                                  flush=True))
    tmp, failure = None, None
    try:
        if find_cifar_folder(root, dataset):  # another process downloaded it while this one waited
            return
        print(f"{dataset} not found: downloading {url} into {os.path.abspath(root)}", flush=True)
        tmp = tempfile.mkdtemp(prefix=".download_", dir=root)
        download_and_extract_archive(url, download_root=tmp)
        for name in os.listdir(tmp):  # the unpacked folder and the archive, each renamed whole into place
            if not os.path.exists(os.path.join(root, name)):
                os.rename(os.path.join(tmp, name), os.path.join(root, name))
    except Exception as exc:  # any network or archive failure ends in the same advice
        failure = exc
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
        lock.release()
    if failure is not None:
        for folder in created:  # deepest first, while this process's folders are empty
            try:
                os.rmdir(folder)
            except OSError:
                break
        raise UsageError(missing_data_message(root, dataset, f"download failed: {failure}")) from failure


def _read_pickle(path: str) -> dict:
    try:
        with open(path, "rb") as f:
            raw = pickle.load(f, encoding="bytes")
    except Exception as exc:
        raise UsageError(f"cannot read CIFAR file {path!r}: {exc.__class__.__name__}: {exc}. "
                         "Is it a truncated or foreign file? Re-download the release.") from exc
    if not isinstance(raw, dict):
        raise UsageError(f"CIFAR file {path!r} does not hold a dict; it is not a CIFAR pickle")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in raw.items()}


def read_cifar_split(folder: str, dataset: str, split: str) -> ImageArray:
    """Read the train or test split of the release in `folder` into HWC uint8 images."""
    info = CIFAR_INFO[dataset]
    images, labels = [], []
    for name in info[split]:
        path = _find_case_insensitive(folder, name)
        if path is None:
            raise UsageError(missing_data_message(folder, dataset, f"file {name!r} is missing"))
        entry = _read_pickle(path)
        if "data" not in entry or info["label_key"] not in entry:
            raise UsageError(f"CIFAR file {path!r} lacks the keys 'data' and {info['label_key']!r}; "
                             f"it is not a {dataset} pickle")
        images.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.append(np.asarray(entry[info["label_key"]], dtype=np.int64))
    return ImageArray(np.concatenate(images).transpose(0, 2, 3, 1).copy(), np.concatenate(labels))


def read_class_names(folder: str, dataset: str) -> Optional[List[str]]:
    """The class names from the release's meta file, or None when it is missing or unreadable."""
    name, key = CIFAR_INFO[dataset]["meta"]
    path = _find_case_insensitive(folder, name)
    if path is None:
        return None
    try:
        names = _read_pickle(path).get(key)
    except UsageError:
        return None
    if not isinstance(names, list) or len(names) != CIFAR_INFO[dataset]["num_classes"]:
        return None
    return [n.decode("latin1") if isinstance(n, bytes) else str(n) for n in names]


def load_cifar_lt(root: str, dataset: str, rate: float, split: str, seed: int,
                  download: bool = True) -> Dict:
    """The long-tailed training set, the full balanced test set, the class names (None if unknown) and the
    release's whole training set (`release`: what the long-tailed subsets of every seed are drawn from)."""
    folder = find_cifar_folder(root, dataset)
    if folder is None and download:
        download_cifar(root, dataset)
        folder = find_cifar_folder(root, dataset)
    if folder is None:
        raise UsageError(missing_data_message(root, dataset, "no release found"))
    train = read_cifar_split(folder, dataset, "train")
    test = read_cifar_split(folder, dataset, "test")
    num_classes = CIFAR_INFO[dataset]["num_classes"]
    available = np.bincount(train.labels, minlength=num_classes)
    # n_max is the release's images per class (5000 / 500), computed as in the
    # released code from the file, which also lets tests use tiny copies.
    counts = img_num_per_class(len(train.labels) / num_classes, num_classes, rate)
    if len(available) != num_classes or (available < counts).any():
        raise UsageError(f"{folder!r} holds per-class counts {available.tolist()}, "
                         f"which cannot give the long-tailed counts {counts}")
    keep = select_long_tailed(train.labels, counts, split, seed)
    return {"train": ImageArray(train.images[keep], train.labels[keep]), "test": test,
            "class_names": read_class_names(folder, dataset), "release": train}
