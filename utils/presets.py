"""The paper's settings per data set, taken by the flags a command line leaves out.

The GLMC README gives one command per data set, and every command passes every
method flag; those commands are the table below. The released `main.py` has one
set of defaults that matches none of them (`RELEASED_DEFAULTS`), so a flag left
out there silently changed the method (for instance CIFAR-10's consistency weight
on CIFAR-100). Here a flag left out takes the paper's value for `--dataset`, and a
flag given always wins.
"""
import argparse
from typing import Dict

PRESET_FLAGS = ("arch", "lr", "epochs", "batch_size", "weight_decay", "momentum", "resample_weighting",
                "label_weighting", "contrast_weight", "image_size")
_CIFAR = {"arch": "resnet32", "lr": 0.01, "epochs": 200, "batch_size": 64, "weight_decay": 5e-3, "momentum": 0.9,
          "resample_weighting": 0.0, "label_weighting": 1.2, "image_size": 32}
# Folder data sets train the CIFAR ResNet-50 (3x3 stem, no max-pool: full resolution in its first stage),
# whose training step at 224 px needs about 1.2 GB of saved activations per image, over 150 GB for the
# README's batch of 64 in two mixes. At 112 px it needs about 40 GB, so the nepes command fits one
# 80 GB GPU (utils/memory.py computes the estimate, and main.py prints it before training).
FOLDER_IMAGE_SIZE = 112
PAPER_PRESETS: Dict[str, Dict] = {
    "cifar10": {**_CIFAR, "contrast_weight": 4.0},
    "cifar100": {**_CIFAR, "contrast_weight": 10.0},
    "ImageNet-LT": {"arch": "resnext50_32x4d", "lr": 0.1, "epochs": 135, "batch_size": 120, "weight_decay": 2e-4,
                    "momentum": 0.9, "resample_weighting": 0.2, "label_weighting": 1.0, "contrast_weight": 10.0,
                    "image_size": 224},
    "iNaturelist2018": {"arch": "resnext50_32x4d", "lr": 0.1, "epochs": 120, "batch_size": 128,
                        "weight_decay": 1e-4, "momentum": 0.9, "resample_weighting": 0.2, "label_weighting": 1.0,
                        "contrast_weight": 10.0, "image_size": 224},
    "nepes": {**_CIFAR, "arch": "resnet50", "contrast_weight": 4.0, "image_size": FOLDER_IMAGE_SIZE},
}
PAPER_PRESETS["folder"] = PAPER_PRESETS["nepes"]  # any folder data set: the one folder data set of the paper
RELEASED_DEFAULTS = {"dataset": "cifar100", "arch": "resnet34", "lr": 0.01, "epochs": 200, "batch_size": 64,
                     "weight_decay": 5e-3, "momentum": 0.9, "resample_weighting": 0.2, "label_weighting": 1.0,
                     "contrast_weight": 10, "print_freq": 1000}
FLAG_NAMES = {"arch": "-a", "batch_size": "-b", "weight_decay": "--weight_decay", "image_size": "--image_size"}


def apply_paper_presets(args: argparse.Namespace) -> Dict[str, str]:
    """Set each preset flag the command line left out to the paper's value for `args.dataset`.

    Returns where every value of `args` came from: 'given', 'preset' or 'default'.
    """
    given = set(getattr(args, "given_flags", ()))
    preset = PAPER_PRESETS[args.dataset]
    sources = {}
    for dest in sorted(vars(args)):
        if dest == "given_flags":
            continue
        if dest in given:
            sources[dest] = "given"
        elif dest in preset:
            setattr(args, dest, preset[dest])
            sources[dest] = "preset"
        else:
            sources[dest] = "default"
    return sources


def mark_preset_flags(parser: argparse.ArgumentParser, flags, note: str) -> None:
    """Give `flags` no parser default (a preset fills them) and say so in their help."""
    for action in parser._actions:
        if action.dest in flags:
            action.default = None
            action.help = f"{action.help} (default: {note})"


def preset_network_and_crop(args: argparse.Namespace) -> None:
    """-a and --image_size left out: the paper's network and crop for --dataset (a checkpoint's own
    description overrides them later)."""
    for flag in ("arch", "image_size"):
        if getattr(args, flag, None) is None:
            setattr(args, flag, PAPER_PRESETS[args.dataset][flag])


def preset_table() -> str:
    """The presets as a text table, for --help and the README."""
    names = ("cifar10", "cifar100", "ImageNet-LT", "iNaturelist2018", "nepes")
    flags = [FLAG_NAMES.get(f, f"--{f}") for f in PRESET_FLAGS]
    rows = [["--dataset", *flags]] + [[n, *(f"{PAPER_PRESETS[n][f]:g}" if isinstance(PAPER_PRESETS[n][f], float)
                                           else str(PAPER_PRESETS[n][f]) for f in PRESET_FLAGS)] for n in names]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)
