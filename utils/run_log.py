"""A run folder's outputs: log file and stdout, TensorBoard scalars, metrics.jsonl, args.json."""
import json
import os
import platform
import re
import sys
import time
from typing import Dict, Optional

import numpy as np
import torch


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


def write_json(path: str, obj: Dict) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, default=str)
        f.write("\n")


class RunLog:
    """Prints to stdout and `log.txt`; scalars to TensorBoard; one JSON line per epoch."""

    def __init__(self, folder: Optional[str], tensorboard: bool = True, echo: bool = True) -> None:
        self.folder, self.echo = folder, echo
        self._file = open(os.path.join(folder, "log.txt"), "a") if folder else None
        self._tb = None
        if folder and tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=folder)

    def print(self, message: str) -> None:
        if self.echo:
            print(message, flush=True)
        if self._file:
            self._file.write(message + "\n")
            self._file.flush()

    def scalars(self, values: Dict[str, Optional[float]], step: int) -> None:
        if self._tb:
            for tag, value in values.items():
                if value is not None:
                    self._tb.add_scalar(tag, value, step)

    def epoch_record(self, record: Dict) -> None:
        if self.folder:
            with open(os.path.join(self.folder, "metrics.jsonl"), "a") as f:
                f.write(json.dumps(record) + "\n")

    def close(self) -> None:
        if self._tb:
            self._tb.close()
            self._tb = None
        if self._file:
            self._file.close()
            self._file = None
        sys.stdout.flush()
