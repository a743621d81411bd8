"""Checkpoints in the released layout, written crash-safe, and in the background while training goes on.

A checkpoint is data, not code: it is read with `torch.load(weights_only=True)`, which
unpickles tensors and plain Python types only (plus numpy arrays, which the random-state
entries of this project's checkpoints hold), so a downloaded file cannot run code when it
is loaded. Each checkpoint this project writes records a SHA-256 of its contents (tensors
and values), checked on every read, so a changed byte on disk stops the run instead of
training on.
"""
import hashlib
import os
import pickle
import shutil
import threading
from typing import Callable, Dict, Mapping, Optional

import numpy as np
import torch
from torch import nn

from utils.errors import UsageError
from utils.safe_files import write_atomically

CHECKSUM = "checksum"

PREFIXES = ("module.", "_orig_mod.")
LATEST, BEST = "ckpt.pth.tar", "ckpt.best.pth.tar"


def strip_prefixes(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Drop DataParallel's `module.` and torch.compile's `_orig_mod.` from every key."""
    out = {}
    for key, value in state_dict.items():
        changed = True
        while changed:
            changed = False
            for prefix in PREFIXES:
                if key.startswith(prefix):
                    key, changed = key[len(prefix):], True
        out[key] = value
    return out


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside DataParallel/DDP/torch.compile wrappers."""
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):
        model = getattr(model, "module", None) or model._orig_mod
    return model


def content_checksum(obj) -> str:
    """SHA-256 of a checkpoint's contents: every tensor's dtype, shape and bytes and every other value's
    repr, in a fixed order (dict entries by key); the entry `checksum` itself is left out."""
    digest = hashlib.sha256()

    def visit(value) -> None:
        if isinstance(value, torch.Tensor):
            t = value.detach().cpu().contiguous().reshape(-1)
            digest.update(f"tensor {t.dtype} {tuple(value.shape)};".encode())
            digest.update(t.view(torch.uint8).numpy().data if t.numel() else b"")
        elif isinstance(value, np.ndarray):
            digest.update(f"array {value.dtype} {value.shape};".encode())
            digest.update(np.ascontiguousarray(value).tobytes())
        elif isinstance(value, dict):
            keys = sorted((k for k in value if k != CHECKSUM), key=repr)
            digest.update(f"dict {len(keys)};".encode())
            for key in keys:
                digest.update(f"{key!r}:".encode())
                visit(value[key])
        elif isinstance(value, (list, tuple)):
            digest.update(f"{type(value).__name__} {len(value)};".encode())
            for item in value:
                visit(item)
        else:
            digest.update(f"{value!r};".encode())

    visit(obj)
    return digest.hexdigest()


def atomic_save(obj: Dict, path: str) -> None:
    """torch.save `obj`, with the checksum of its contents, to `path` so that `path` is always a
    complete checkpoint."""
    obj = {**obj, CHECKSUM: content_checksum(obj)}
    write_atomically(path, lambda f: torch.save(obj, f))


def atomic_copy(source: str, path: str) -> None:
    def copy(f):
        with open(source, "rb") as src:
            shutil.copyfileobj(src, f)
    write_atomically(path, copy)


def save_checkpoint(state: Dict, folder: str, is_best: bool, every: int = 20) -> str:
    """`ckpt.pth.tar` first (it marks the epoch done), then its copies: `ckpt.best.pth.tar` when
    best, `<epoch>_ckpt.pth.tar` every `every` epochs. Returns the latest checkpoint's path."""
    latest = os.path.join(folder, LATEST)
    atomic_save(state, latest)
    copies = [BEST] if is_best else []
    if every and state["epoch"] % every == 0:
        copies.append(f"{state['epoch']}_{LATEST}")
    for name in copies:  # files of their own, not hard links: a write into one never changes another name
        atomic_copy(latest, os.path.join(folder, name))
    return latest


def host_copy(obj):
    """`obj` with every tensor copied to host memory (nested dicts, lists and tuples kept)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: host_copy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(host_copy(v) for v in obj)
    return obj


class BackgroundWriter:
    """Writes checkpoints while the next epoch trains.

    `save` copies the state to host memory (training may then change the model at once), and a
    thread writes it with `save_checkpoint` (same crash safety: a kill at any moment leaves the last
    complete checkpoint), then runs `after` (the epoch's metrics line, so that it follows its
    checkpoint as before). One write at a time: `save` and `wait` first wait for the previous one,
    and raise its error (a WriteFailed) if it failed.
    """

    def __init__(self) -> None:
        self._thread: Optional[threading.Thread] = None
        self._error: Optional[BaseException] = None

    def save(self, state: Dict, folder: str, is_best: bool, every: int = 20,
             after: Optional[Callable[[], None]] = None) -> None:
        self.wait()
        snapshot = host_copy(state)

        def write() -> None:
            try:
                save_checkpoint(snapshot, folder, is_best, every)
                if after:
                    after()
            except BaseException as exc:  # raised in the training thread by the next save or wait
                self._error = exc

        self._thread = threading.Thread(target=write, name="checkpoint-writer")
        self._thread.start()

    def join(self) -> None:
        """Wait for the write in progress; its error, if any, is kept for `wait`."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def wait(self) -> None:
        self.join()
        if self._error is not None:
            error, self._error = self._error, None
            raise error


def first_non_finite(state_dict: Mapping[str, torch.Tensor]) -> Optional[str]:
    """The first floating-point entry (weight or BatchNorm statistic) with a NaN or inf, else None."""
    floats = [(k, v) for k, v in state_dict.items() if torch.is_tensor(v) and v.is_floating_point()]
    if not floats:
        return None
    finite = torch.stack([torch.isfinite(v).all() for _, v in floats]).cpu()
    bad = (~finite).nonzero()
    return floats[int(bad[0])][0] if len(bad) else None


class CorruptCheckpoint(UsageError):
    """A checkpoint whose contents do not match the checksum written with them (exit code 2)."""


# numpy arrays of plain dtypes (the numpy random state): data, allowed by name
SAFE_GLOBALS = [np.zeros(1).__reduce__()[0], np.ndarray, np.dtype, type(np.dtype(np.uint32))]
SAFE_NAMES = {f"{o.__module__}.{o.__qualname__}" for o in SAFE_GLOBALS}
TRUST_HINT = ("Load it only if you trust where it came from, with --trust_checkpoint (which runs any code the "
              "file holds)")


def _load(path: str, trust: bool):
    if trust:
        return torch.load(path, map_location="cpu", weights_only=False)
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        try:
            unsafe = [g for g in torch.serialization.get_unsafe_globals_in_checkpoint(path) if g not in SAFE_NAMES]
        except Exception:  # not a zip checkpoint: nothing to inspect
            unsafe = []
        if unsafe:
            raise UsageError(f"checkpoint {path!r} holds pickled objects other than tensors and plain values "
                             f"({', '.join(unsafe)}); loading it would run code from the file, so it was not "
                             "loaded. " + TRUST_HINT) from None
        reason = " ".join(str(exc).split("WeightsUnpickler error:")[-1].split("Check the documentation")[0].split())
        raise UsageError(f"cannot read checkpoint {path!r} as data ({reason}). Is the file truncated or not a "
                         "PyTorch checkpoint? (A file you trust that holds other Python objects loads with "
                         "--trust_checkpoint, which runs its code)") from None


def not_a_checkpoint(path: str) -> Optional[str]:
    """What the file is when its first bytes are neither a zip archive (torch.save) nor a pickle (the
    legacy format): 'a PNG image', 'JSON text', ...; None when it may be a checkpoint."""
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith(b"PK\x03\x04") or head.startswith(b"\x80"):
        return None
    known = [(b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"{", "JSON text"), (b"[", "JSON text")]
    kind = next((what for magic, what in known if head.lstrip().startswith(magic)), None)
    if kind is None:
        try:
            head.decode("utf-8")
            kind = "text" if head else "an empty file"
        except UnicodeDecodeError:
            kind = "another kind of file"
    return kind


def read_checkpoint(path: str, trust: bool = False) -> Dict:
    """Load a checkpoint dict (or a bare state_dict, wrapped as {'state_dict': ...}) on the CPU, as data
    only unless `trust`; a checkpoint with a checksum is verified."""
    if not os.path.isfile(path):
        raise UsageError(f"checkpoint {path!r} does not exist")
    kind = not_a_checkpoint(path)
    if kind:
        raise UsageError(f"{path!r} is not a PyTorch checkpoint: it is {kind}. Name a .pth.tar file, or a run "
                         "folder")
    try:
        obj = _load(path, trust)
    except UsageError:
        raise
    except Exception as exc:
        raise UsageError(f"cannot read checkpoint {path!r}: {exc.__class__.__name__}: {exc}. "
                         "Is the file truncated or not a PyTorch checkpoint?") from exc
    if isinstance(obj, dict) and CHECKSUM in obj and obj[CHECKSUM] != content_checksum(obj):
        raise CorruptCheckpoint(f"checkpoint {path!r} is corrupted: its contents do not match the checksum "
                                "written with them (a byte changed on disk or in a copy; a checkpoint edited on "
                                "purpose "
                                f"must drop its {CHECKSUM!r} entry)")
    if isinstance(obj, dict) and "state_dict" in obj:
        return obj
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return {"state_dict": obj}
    raise UsageError(f"{path!r} is not a model checkpoint: expected a dict with 'state_dict' or a state_dict")


def load_weights(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Load weights whatever their prefix; a mismatch names the keys and shapes that differ."""
    ours = model.state_dict()
    theirs = strip_prefixes(state_dict)
    missing = [k for k in ours if k not in theirs]
    unexpected = [k for k in theirs if k not in ours]
    wrong = [f"{k}: checkpoint {tuple(theirs[k].shape)} vs model {tuple(ours[k].shape)}"
             for k in ours if k in theirs and theirs[k].shape != ours[k].shape]
    if missing or unexpected or wrong:
        looks = ""
        if "fc_cb.weight" in theirs:
            classes, dim = theirs["fc_cb.weight"].shape
            looks = f"; it looks like {classes} classes on a {dim}-d feature (check -a, --num_classes, --width)"
        lines = [f"checkpoint {source!r} does not fit the model: {len(missing)} missing keys, {len(unexpected)} "
                 f"unexpected keys, {len(wrong)} shape mismatches{looks}"]
        for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", wrong)):
            if items:
                lines.append(f"  {label}: " + ", ".join(items[:6]) + (" ..." if len(items) > 6 else ""))
        raise UsageError("\n".join(lines))
    model.load_state_dict(theirs)

