"""Command-line flags shared by main.py and test.py (spellings of SPEC §1), and their checks."""
import argparse
import os
import shlex
import sys
from typing import Sequence

import torch

from datasets import DATASETS
from datasets.cifar_lt import SPLITS
from models import ARCHS, RESNET32_RELEASED_WIDTH
from utils.errors import RunStopped, UsageError
from utils.metrics import SHOT_RULES


class FlagTrackingParser(argparse.ArgumentParser):
    """An ArgumentParser that also records which flags the command line gave (`args.given_flags`).

    A flag given with its default value counts as given: the run's description and the
    checks against a checkpoint need to know what the user asked for, not what differs
    from a default.
    """

    def parse_known_args(self, args=None, namespace=None):
        parsed, extras = super().parse_known_args(args, namespace)
        if not hasattr(parsed, "given_flags"):
            defaults = [(action, action.default) for action in self._actions]
            try:
                for action, _ in defaults:
                    action.default = argparse.SUPPRESS
                probe, _ = super().parse_known_args(args, argparse.Namespace())
            finally:
                for action, default in defaults:
                    action.default = default
            parsed.given_flags = sorted(vars(probe))
        return parsed, extras


def command_line(script: str, parser: argparse.ArgumentParser, args: argparse.Namespace,
                 skip: Sequence[str] = (), extra: Sequence[str] = ()) -> str:
    """`python <script>` with the flags the user gave (their current values), except `skip`, then `extra`."""
    tokens = ["python", script]
    for action in parser._actions:
        if action.dest not in getattr(args, "given_flags", ()) or action.dest in skip or not action.option_strings:
            continue
        option = next((o for o in action.option_strings if o.startswith("--")), action.option_strings[0])
        value = getattr(args, action.dest)
        if action.nargs == 0:  # store_true and the like
            tokens.append(option)
        else:
            tokens += [option, shlex.quote(str(value))]
    return " ".join(tokens + list(extra))


def add_data_and_model_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("data and model")
    g.add_argument("--dataset", default="cifar10", choices=DATASETS,
                   help="data set; 'folder' (alias 'nepes') is any tree ROOT/train/<class>/ + ROOT/val|valid|test/<class>/")
    g.add_argument("--root", default="data", help="data set root: for CIFAR the folder holding cifar-10-batches-py/ "
                   "or cifar-100-python/ (or that folder itself); for ImageNet-LT and iNat the folder the list "
                   "paths are relative to; for folder data sets the folder holding train/ (default: data)")
    g.add_argument("--dir_train_txt", default=None,
                   help="training image list, 'relative/path label' per line (default: data/data_txt/"
                        "ImageNet_LT_train.txt or iNaturalist18_train.txt)")
    g.add_argument("--dir_test_txt", default=None,
                   help="test image list (default: data/data_txt/ImageNet_LT_test.txt or iNaturalist18_val.txt)")
    g.add_argument("--image_size", type=int, default=224,
                   help="training crop of ImageNet-LT, iNat and folder data sets (default 224; CIFAR is 32)")
    g.add_argument("--skip_bad_images", action="store_true",
                   help="skip images that cannot be decoded (counted and reported each epoch) instead of stopping")
    g.add_argument("--no_download", action="store_true", help="never download CIFAR when it is missing")
    g.add_argument("-a", "--arch", default="resnet32", choices=list(ARCHS), help="network")
    g.add_argument("--width", type=int, default=RESNET32_RELEASED_WIDTH,
                   help="base width of resnet32: 64 as released (7.44 M parameters), 16 for the standard "
                        "ResNet-32 of most long-tail papers (0.46 M)")
    g.add_argument("--num_classes", type=int, default=None,
                   help="number of classes (default: the data set's); must match the data")
    g.add_argument("--imbanlance_rate", "--imbalance_rate", dest="imbanlance_rate", type=float, default=0.01,
                   help="n_min / n_max of the long-tailed training set (0.01 is IF 100; 1.0 is balanced)")
    g.add_argument("--split", default="released", choices=SPLITS,
                   help="which images the long-tailed set keeps: 'released' (seeded choice without replacement, "
                        "class by class; the 'updated' results), 'cao' (the seed-0 split of Cao et al. 2019 used "
                        "by most papers), or 'replacement' (the first release's draw with replacement; the paper's "
                        "original GLMC column)")
    g.add_argument("--seed", type=int, default=3407,
                   help="random seed of training (default 3407 as released); also picks the CIFAR-LT images "
                        "unless --data_seed is given")
    g.add_argument("--data_seed", type=int, default=None,
                   help="seed that picks the CIFAR-LT images (--split released/replacement); default: --seed, "
                        "as released. Give it to vary the training seed on a fixed training set")
    g.add_argument("-b", "--batch_size", type=int, default=64, help="batch size")
    g.add_argument("-j", "--workers", type=int, default=min(4, os.cpu_count() or 1),
                   help="data loading worker processes (default: 4 as released, fewer on a smaller machine)")
    g.add_argument("--gpu", type=int, default=None, help="GPU index (default: GPU 0 if there is one, else CPU)")
    g.add_argument("--debug", action="store_true", help="show the Python traceback on errors")
    g.add_argument("--shot_rule", default="released", choices=list(SHOT_RULES),
                   help="many/medium/few rule: " + "; ".join(f"{k}: {v}" for k, v in SHOT_RULES.items()))


def check_common_args(args: argparse.Namespace) -> None:
    if not 0.0 < args.imbanlance_rate <= 1.0:
        raise UsageError(f"--imbanlance_rate {args.imbanlance_rate} is outside (0, 1]; 0.01 means IF 100")
    if args.batch_size <= 0:
        raise UsageError(f"-b/--batch_size {args.batch_size} must be positive")
    if args.image_size < 8:
        raise UsageError(f"--image_size {args.image_size} is too small (at least 8)")
    if args.workers < 0:
        raise UsageError(f"-j/--workers {args.workers} must be 0 or more")
    if args.arch != "resnet32" and args.width != RESNET32_RELEASED_WIDTH:
        raise UsageError(f"--width {args.width} applies to resnet32 only, not to -a {args.arch}")
    if args.width <= 0 or args.width % 4:
        raise UsageError(f"--width {args.width} must be a positive multiple of 4 (option-A shortcuts pad by a quarter)")


def select_device(gpu) -> torch.device:
    """GPU `gpu` if given, else GPU 0 when there is one, else the CPU."""
    if gpu is None:
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    count = torch.cuda.device_count()
    if gpu < 0 or gpu >= count:
        raise UsageError(f"--gpu {gpu} asked for, but this machine has {count} GPU(s)")
    return torch.device(f"cuda:{gpu}")


def run_cli(entry, parser: argparse.ArgumentParser, argv=None) -> None:
    """Parse and run; a UsageError or RunStopped ends in one clear message and its exit code."""
    args = parser.parse_args(argv)
    try:
        entry(args)
    except (UsageError, RunStopped) as exc:
        if args.debug:
            raise
        message = str(exc)
        if "Original Traceback" in message:  # raised in a DataLoader worker: keep the worker's own message
            message = message.strip().splitlines()[-1].split(": ", 1)[-1]
        print(f"error: {message}" if isinstance(exc, UsageError) else message, file=sys.stderr)
        sys.exit(exc.exit_code if isinstance(exc, RunStopped) else 2)
