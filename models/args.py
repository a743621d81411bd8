"""The network flags of main.py, test.py and the MaxNorm stage, and their checks."""
import argparse

from models import ARCHS, RESNET32_RELEASED_WIDTH
from utils.errors import UsageError


def add_model_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("network")
    g.add_argument("-a", "--arch", default="resnet32", choices=list(ARCHS), help="network")
    g.add_argument("--width", type=int, default=RESNET32_RELEASED_WIDTH,
                   help="base width of resnet32: 64 as released (7.44 M parameters), 16 for the standard "
                        "ResNet-32 of most long-tail papers (0.46 M)")


def check_model_args(args: argparse.Namespace) -> None:
    if args.arch != "resnet32" and args.width != RESNET32_RELEASED_WIDTH:
        raise UsageError(f"--width {args.width} applies to resnet32 only, not to -a {args.arch}")
    if args.width <= 0 or args.width % 4:
        raise UsageError(f"--width {args.width} must be a positive multiple of 4 (option-A shortcuts pad by a quarter)")


def model_flag_applies(dest: str, args: argparse.Namespace) -> bool:
    """False for --width with a network other than resnet32."""
    return not (dest == "width" and args.arch != "resnet32")
