"""Command-line flags shared by main.py and test.py (spellings of SPEC §1), and their checks."""
import argparse
import os
import sys

import torch

from datasets import DATASETS
from datasets.cifar_lt import SPLITS
from models import ARCHS, RESNET32_RELEASED_WIDTH
from utils.errors import RunStopped, UsageError
from utils.metrics import SHOT_RULES


def add_data_and_model_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("data and model")
    g.add_argument("--dataset", default="cifar10", choices=DATASETS, help="data set")
    g.add_argument("--root", default="data", help="data set root: the folder holding cifar-10-batches-py/ "
                   "or cifar-100-python/, or that folder itself (default: data)")
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
    g.add_argument("--seed", type=int, default=3407, help="random seed (default 3407 as released)")
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
        print(f"error: {exc}" if isinstance(exc, UsageError) else str(exc), file=sys.stderr)
        sys.exit(exc.exit_code if isinstance(exc, RunStopped) else 2)
