"""Evaluate a GLMC checkpoint (ours, or a released one with `module.` keys) on the test set.

    python test.py --dataset cifar10 -a resnet32 --num_classes 10 --resume runs/<run>/ckpt.best.pth.tar
"""
import argparse
from typing import Dict

from datasets import build_data, build_test_loader
from models import build_model
from utils.checkpoint import load_weights, read_checkpoint
from utils.config import add_data_and_model_args, check_common_args, run_cli, select_device
from utils.errors import UsageError
from utils.metrics import evaluate, format_group
from utils.run_log import write_json


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Evaluate a GLMC checkpoint")
    add_data_and_model_args(parser)
    parser.add_argument("--resume", required=True, help="checkpoint to evaluate (ckpt.pth.tar, ckpt.best.pth.tar, ...)")
    parser.add_argument("--json", default=None, help="write the figures as JSON to this path")
    return parser


def main(args: argparse.Namespace) -> Dict:
    check_common_args(args)
    device = select_device(args.gpu)
    checkpoint = read_checkpoint(args.resume)
    data = build_data(args)
    model = build_model(args.arch, data.num_classes, args.width)
    load_weights(model, checkpoint["state_dict"], args.resume)
    model.to(device)
    result = evaluate(model, build_test_loader(data.test, args.workers), device, data.train_counts,
                      args.shot_rule)
    epoch = checkpoint.get("epoch", "?")
    print(f"checkpoint {args.resume} (epoch {epoch}) on {args.dataset} test set, {len(data.test)} images")
    print(f"top-1 {result['top1']:.2f}  top-5 {result['top5']:.2f}  many {format_group(result['many'])}  "
          f"medium {format_group(result['medium'])}  few {format_group(result['few'])}  "
          f"(shot rule {result['shot_rule']}: groups of {result['group_sizes']} classes)")
    if args.json:
        try:
            write_json(args.json, {"checkpoint": args.resume, "epoch": epoch, **result})
        except OSError as exc:
            raise UsageError(f"cannot write --json {args.json!r}: {exc.strerror}") from exc
    return result


if __name__ == "__main__":
    run_cli(main, get_args_parser())
