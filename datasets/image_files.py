"""Data sets of image files: lists (`relative/path label` per line; ImageNet-LT, iNaturalist 2018)
and class-folder trees (nepes and any ImageFolder-style data set)."""
import multiprocessing
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import List, Optional, Sequence, Tuple

import torch
from PIL import Image
from torch.utils.data import Dataset, default_collate

from utils.errors import UsageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
EVAL_SPLIT_NAMES = ("valid", "val", "test")


def sample_index(key) -> int:
    """A sampler key is an index, or (index, seed): then that sample's augmentation is drawn
    from `seed`, so it does not depend on the loader worker that happens to make it."""
    if isinstance(key, tuple):
        index, seed = key
        torch.default_generator.manual_seed(seed)
        return index
    return key


class BadImageError(UsageError):
    """An image file that cannot be opened or decoded."""


class ImageFileDataset(Dataset):
    """Images opened as RGB from `paths`.

    With `skip_bad`, an undecodable image yields None (dropped by `collate_skipping_bad`)
    and is counted in a counter shared with the loader's worker processes.
    """

    def __init__(self, paths: Sequence[str], targets: Sequence[int], transform=None, skip_bad: bool = False) -> None:
        self.paths, self.targets = list(paths), [int(t) for t in targets]
        self.transform, self.skip_bad = transform, skip_bad
        self._skipped = multiprocessing.Value("i", 0) if skip_bad else None

    def take_skipped(self) -> int:
        """Images skipped since the last call."""
        if self._skipped is None:
            return 0
        with self._skipped.get_lock():
            count, self._skipped.value = self._skipped.value, 0
        return count

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, key):
        index = sample_index(key)
        path = self.paths[index]
        try:
            with Image.open(path) as img:
                image = img.convert("RGB")
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            if self.skip_bad:
                with self._skipped.get_lock():
                    self._skipped.value += 1
                return None
            raise BadImageError(f"cannot decode image {path!r} ({exc.__class__.__name__}: {exc}); "
                                "fix or remove it, or pass --skip_bad_images to skip such images") from None
        if self.transform is not None:
            image = self.transform(image)
        return image, self.targets[index]


def collate_skipping_bad(batch):
    """Collate the decodable samples of a batch; None when none is left."""
    good = [sample for sample in batch if sample is not None]
    return default_collate(good) if good else None


def collate_fn_for(dataset: Dataset):
    """`collate_skipping_bad` for data sets that skip undecodable images, else the default."""
    return collate_skipping_bad if getattr(dataset, "skip_bad", False) else None


def read_image_list(list_path: str, root: str, num_classes: int, flag: str) -> Tuple[List[str], List[int]]:
    """Parse `relative/path label` lines, joining paths to `root`; errors name the file and line."""
    try:
        with open(list_path, "rb") as f:
            raw_lines = f.read().splitlines()
    except OSError as exc:
        raise UsageError(f"{flag} {list_path!r} cannot be read: {exc.strerror}") from None
    paths, labels = [], []
    for number, raw in enumerate(raw_lines, start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            print(f"warning: {list_path}, line {number}: not UTF-8 text; skipped", file=sys.stderr)
            continue
        if not line.strip():
            continue
        parts = line.strip().rsplit(None, 1)
        where = f"{list_path}, line {number}: {line.strip()!r}"
        if len(parts) != 2:
            raise UsageError(f"{where}: expected 'relative/path label'")
        try:
            label = int(parts[1])
        except ValueError:
            raise UsageError(f"{where}: the label {parts[1]!r} is not an integer") from None
        if not 0 <= label < num_classes:
            raise UsageError(f"{where}: label {label} is outside 0..{num_classes - 1} (--num_classes {num_classes})")
        paths.append(os.path.join(root, parts[0]))
        labels.append(label)
    if not paths:
        raise UsageError(f"{flag} {list_path!r} lists no images")
    return paths, labels


def find_eval_split(root: str) -> str:
    for name in EVAL_SPLIT_NAMES:
        if os.path.isdir(os.path.join(root, name)):
            return os.path.join(root, name)
    raise UsageError(f"--root {root!r} has no evaluation split: expected one of "
                     f"{', '.join(n + '/' for n in EVAL_SPLIT_NAMES)} beside train/")


def scan_class_folders(split_dir: str, classes: Optional[List[str]] = None) -> Tuple[List[str], List[int], List[str]]:
    """Image paths and labels of a class-folder tree; class index = sorted folder name."""
    if not os.path.isdir(split_dir):
        raise UsageError(f"folder data set: {split_dir!r} does not exist; expected ROOT/train/<class>/<image> "
                         f"and ROOT/{{{','.join(EVAL_SPLIT_NAMES)}}}/<class>/<image>")
    found = sorted(e.name for e in os.scandir(split_dir) if e.is_dir())
    if classes is None:
        classes = found
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise UsageError(f"{split_dir!r} has class folders not in train/: {', '.join(unknown[:5])}")
    index = {name: i for i, name in enumerate(classes)}
    paths, labels = [], []
    for name in found:
        for dirpath, _, files in sorted(os.walk(os.path.join(split_dir, name))):
            for file in sorted(files):
                if file.lower().endswith(IMAGE_EXTENSIONS):
                    paths.append(os.path.join(dirpath, file))
                    labels.append(index[name])
    if not paths:
        raise UsageError(f"{split_dir!r} holds no images ({', '.join(IMAGE_EXTENSIONS)}) in class folders")
    return paths, labels, classes


def unreadable_files(paths: Sequence[str], threads: int = 32) -> List[str]:
    """The paths that do not exist or cannot be read (checked in parallel, for network file systems)."""
    chunk = max(1, len(paths) // (threads * 8))
    chunks = [paths[i:i + chunk] for i in range(0, len(paths), chunk)]

    def check(part: Sequence[str]) -> List[str]:
        return [p for p in part if not os.access(p, os.R_OK) or not os.path.isfile(p)]

    with ThreadPoolExecutor(threads) as pool:
        return [p for bad in pool.map(check, chunks) for p in bad]


def preflight(datasets: Sequence[Tuple[str, Sequence[str]]], show: int = 5) -> str:
    """Check every listed file; raise UsageError naming the first missing ones, else return a summary."""
    lines, total, missing_total = [], 0, 0
    for name, paths in datasets:
        missing = unreadable_files(paths)
        total += len(paths)
        missing_total += len(missing)
        if missing:
            lines.append(f"{name}: {len(missing)} of {len(paths)} files missing or unreadable, e.g. "
                         + ", ".join(missing[:show]))
    if missing_total:
        raise UsageError("preflight check failed: " + "; ".join(lines) + ". Check --root and the image lists.")
    return f"preflight: all {total} listed files exist and are readable"
