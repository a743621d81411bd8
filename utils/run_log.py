"""A run folder's outputs: log file and stdout, TensorBoard scalars, args.json."""
import json
import os
import platform
import re
import sys
import time
import uuid
from typing import Dict, Optional

import numpy as np
import torch

from utils.errors import writing
from utils.safe_files import open_append, write_text


def run_name(parts: Dict[str, object], stamp: Optional[str] = None) -> str:
    """A readable folder name from parts, with no spaces or colons."""
    stamp = stamp or time.strftime("%Y%m%d-%H%M%S")
    text = "_".join(f"{v}" for v in parts.values() if v not in (None, "")) + f"_{stamp}"
    return re.sub(r"[^A-Za-z0-9._=-]+", "-", text)


def library_versions() -> Dict[str, str]:
    import torchvision

    return {"python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "numpy": np.__version__,
            "cuda": str(torch.version.cuda)}


def tidy_floats(obj):
    """`obj` with every float rounded to 10 significant digits: the figures keep all they mean, and float
    noise (49.220000000000006) goes."""
    if isinstance(obj, float):
        return float(f"{obj:.10g}")
    if isinstance(obj, dict):
        return {k: tidy_floats(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [tidy_floats(v) for v in obj]
    return obj


def write_json(path: str, obj: Dict) -> None:
    """`obj` as indented JSON, written atomically and never through a link (utils/safe_files.py)."""
    write_text(path, json.dumps(tidy_floats(obj), indent=2, default=str) + "\n")


class RunLog:
    """Prints to stdout and `log.txt`; scalars to TensorBoard."""

    def __init__(self, folder: Optional[str], tensorboard: bool = True, echo: bool = True) -> None:
        self.folder, self.echo = folder, echo
        self.path = os.path.join(folder, "log.txt") if folder else None
        self._file = None
        if self.path:
            with writing(self.path):
                self._file = open_append(self.path)
        self._tb = None
        if folder and tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # a random end to the event file's name: no file planted in a copied folder can bear it
            self._tb = SummaryWriter(log_dir=folder, filename_suffix=f".{uuid.uuid4().hex[:12]}")

    def print(self, message: str) -> None:
        if self.echo:
            print(message, flush=True)
        self.to_file(message)

    def to_file(self, message: str) -> None:
        """Only into log.txt (for messages that already went to stderr)."""
        if self._file:
            with writing(self.path):
                self._file.write(message + "\n")
                self._file.flush()

    def last_words(self, message: str) -> None:
        """The message that ends the run, into log.txt if that still can be written."""
        try:
            self.to_file(message)
        except Exception:  # the disk is full or the folder gone: the message still reaches stderr
            pass

    def scalars(self, values: Dict[str, Optional[float]], step: int) -> None:
        if self._tb:
            for tag, value in values.items():
                if value is not None:
                    self._tb.add_scalar(tag, value, step)

    def close(self) -> None:
        if self._tb:
            self._tb.close()
            self._tb = None
        if self._file:
            try:
                self._file.close()
            except OSError:
                pass
            self._file = None
        sys.stdout.flush()
