"""Evaluate a GLMC checkpoint (ours, or a released one with `module.` keys) on the test set.

    python test.py --dataset cifar10 -a resnet32 --num_classes 10 --resume runs/<run>/ckpt.best.pth.tar \
        [--head fc] [--max_norm 0.1] [--logit_adjust 1.0] [--json report.json] [--plot per_class.png]
"""
import argparse
import os
from typing import Dict

from datasets import build_data, build_test_loader
from utils.checkpoint import model_from_checkpoint, read_checkpoint
from utils.config import add_data_and_model_args, check_common_args, run_cli, select_device
from utils.errors import UsageError
from utils.losses import log_class_prior
from utils.maxnorm import max_norm_threshold, project_rows_
from utils.metrics import predict, summarize
from utils.report import confusion_cells, plot_per_class, table
from utils.run_log import write_json


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Evaluate a GLMC checkpoint")
    add_data_and_model_args(parser)
    g = parser.add_argument_group("evaluation")
    g.add_argument("--resume", required=True, help="checkpoint to evaluate (ckpt.pth.tar, ckpt.best.pth.tar, ...)")
    g.add_argument("--head", default="fc_cb", choices=["fc_cb", "fc"],
                   help="classifier to evaluate: fc_cb (re-balanced, as released) or fc")
    g.add_argument("--max_norm", type=float, default=None, metavar="THRESH",
                   help="post-hoc MaxNorm: cap the head's weight rows at min + THRESH * (max - min) of their norms")
    g.add_argument("--logit_adjust", type=float, default=None, metavar="TAU",
                   help="post-hoc logit adjustment (Menon et al. 2021): logits - TAU * log(training class prior)")
    g.add_argument("--json", default=None, help="write the report (figures, per class, confusion matrix) as JSON")
    g.add_argument("--plot", default=None, help="draw per-class accuracy against training count as a PNG")
    return parser


def main(args: argparse.Namespace) -> Dict:
    check_common_args(args)
    if args.max_norm is not None and not 0.0 <= args.max_norm <= 1.0:
        raise UsageError(f"--max_norm {args.max_norm} must lie in [0, 1] (a fraction of the norms' range)")
    for flag in ("json", "plot"):
        path = getattr(args, flag)
        if path and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            raise UsageError(f"--{flag} {path!r}: its folder does not exist")
    device = select_device(args.gpu)
    checkpoint = read_checkpoint(args.resume)  # a bad checkpoint is reported before the data is read
    data = build_data(args)
    model = model_from_checkpoint(checkpoint, args.resume, args.arch, data.num_classes, args.width)
    head = getattr(model, args.head)
    if args.max_norm is not None:
        project_rows_(head.weight, max_norm_threshold(head.weight, args.max_norm))
    shift = -args.logit_adjust * log_class_prior(data.train_counts) if args.logit_adjust is not None else None
    model.to(device)
    preds, targets = predict(model, build_test_loader(data.test, args.workers), device, head=args.head,
                             logit_shift=shift)
    result = {**summarize(preds, targets, data.train_counts, args.shot_rule), "head": args.head,
              "max_norm": args.max_norm, "logit_adjust": args.logit_adjust}
    epoch = checkpoint.get("epoch", "?")
    print(f"checkpoint {args.resume} (epoch {epoch}) on the {args.dataset} test set, {len(data.test)} images"
          + (f"; MaxNorm {args.max_norm}" if args.max_norm is not None else "")
          + (f"; logit adjustment tau {args.logit_adjust}" if args.logit_adjust is not None else ""))
    print(table(result))
    if args.json:
        write_json(args.json, {"checkpoint": args.resume, "epoch": epoch, **result, "train_counts": data.train_counts,
                               "confusion": confusion_cells(preds[:, 0], targets, data.num_classes)})
    if args.plot:
        plot_per_class(result["per_class"], data.train_counts, args.shot_rule, args.plot,
                       title=f"{args.dataset} {args.head} top-1 {result['top1']:.2f}")
        print(f"per-class plot written to {args.plot}")
    return result


if __name__ == "__main__":
    run_cli(main, get_args_parser())
