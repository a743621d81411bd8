"""Evaluate a GLMC checkpoint (ours, or a released one with `module.` keys) on the test set.

    python test.py --resume runs/<run>            # the run's best checkpoint; settings from the checkpoint
    python test.py --dataset ImageNet-LT -a resnext50_32x4d --num_classes 1000 --resume model_path
        [--head fc] [--tau_norm 1.0 | --norm_cap 0.1] [--logit_adjust 1.0] [--json report.json] [--plot per_class.png]

A checkpoint written by main.py describes its run (network, width, data set, the
training set's class counts): flags left out are taken from it, and a flag that
contradicts it stops with exit 2. Released checkpoints are evaluated from the flags.
The JSON report goes to <run>/eval/ by default. The post-hoc methods change the
classifier without any training; the "+ MaxNorm" second stage (re-training the
classifier) is scripts/maxnorm_stage.py.
"""
if __name__ == "__main__":  # first, before the slow imports: Ctrl-C while they load exits 130 in one line
    from utils.interrupt import exit_on_ctrl_c
    exit_on_ctrl_c()

import argparse
import os
from typing import Dict, Optional

from datasets import build_data, build_test_loader, canonical_dataset
from datasets.args import add_data_args, check_data_args
from models import model_from_checkpoint
from models.heads import CLASSIFIERS
from models.args import add_model_args, check_model_args
from utils.checkpoint import read_checkpoint
from utils.config import FlagTrackingParser, add_run_args, check_run_args, run_cli, select_device
from utils.errors import UsageError, writing
from glmc.losses import log_class_prior
from glmc.maxnorm import max_norm_threshold, project_rows_, tau_normalize_rows_
from utils.metrics import predict, summarize
from utils.presets import mark_preset_flags, preset_network_and_crop
from utils.report import confusion_cells, plot_per_class, table
from utils.run_log import write_json
from utils.safe_files import link_note, make_folder
from utils.runs import (MODEL_AND_DATA_FLAGS, adopt_checkpoint_args, adopt_data_root, checkpoint_description,
                        checkpoint_label, evaluation_checkpoint_path, report_folder, run_head)
from utils.speed import set_threads


def get_args_parser() -> argparse.ArgumentParser:
    parser = FlagTrackingParser(description="Evaluate a GLMC checkpoint")
    add_data_args(parser, training=False)
    add_model_args(parser)
    mark_preset_flags(parser, ["arch", "image_size"],
                      "the checkpoint's; for a released checkpoint the paper's value for --dataset")
    add_run_args(parser, training=False)
    g = parser.add_argument_group("evaluation")
    g.add_argument("--resume", required=True,
                   help="checkpoint to evaluate (ckpt.pth.tar, ckpt.best.pth.tar, ...), or a run folder: its "
                        "best checkpoint")
    g.add_argument("--head", default=None, choices=list(CLASSIFIERS),
                   help="classifier to evaluate (default: the run's evaluation head, which the checkpoint names: "
                        "fc_cb for GLMC, fc for the CE baseline and --fixed_alpha 1; fc_cb for a released "
                        "checkpoint)")
    g.add_argument("--tau_norm", type=float, default=None, metavar="TAU",
                   help="post-hoc tau-normalisation (Kang et al. 2020): each weight row w_c of the head becomes "
                        "w_c / ||w_c|| ** TAU (biases untouched)")
    g.add_argument("--norm_cap", type=float, default=None, metavar="THRESH",
                   help="post-hoc one-shot cap, no retraining: the head's weight rows longer than min + THRESH * "
                        "(max - min) of their norms are scaled down onto it (biases untouched). Not the paper's "
                        "MaxNorm, which is a second training stage: scripts/maxnorm_stage.py")
    g.add_argument("--max_norm", type=float, default=None, help=argparse.SUPPRESS)  # renamed: stops with a message
    g.add_argument("--logit_adjust", type=float, default=None, metavar="TAU",
                   help="post-hoc logit adjustment (Menon et al. 2021): logits - TAU * log(training class prior)")
    g.add_argument("--json", default=None,
                   help="write the report (figures, per class, confusion matrix) as JSON to this path (default: "
                        "<run>/eval/<checkpoint>-<head>[-<post-hoc>].json when the checkpoint is in a run folder)")
    g.add_argument("--plot", nargs="?", const="", default=None, metavar="PNG",
                   help="draw per-class accuracy against training count as a PNG: to this path, or, given alone, "
                        "beside the report (<run>/eval/<checkpoint>-<head>[-<post-hoc>].png)")
    return parser


def report_kind(args: argparse.Namespace) -> str:
    """The evaluation as a name: the head and any post-hoc method, e.g. 'fc_cb', 'fc_cb-la1'."""
    parts = [args.head]
    if args.tau_norm is not None:
        parts.append(f"tau{args.tau_norm:g}")
    if args.norm_cap is not None:
        parts.append(f"cap{args.norm_cap:g}")
    if args.logit_adjust is not None:
        parts.append(f"la{args.logit_adjust:g}")
    return "-".join(parts)


def default_report_path(checkpoint_path: str, checkpoint: Dict, args: argparse.Namespace) -> Optional[str]:
    run_dir = report_folder(checkpoint_path, checkpoint)
    if run_dir is None:
        return None
    return os.path.join(run_dir, "eval", f"{checkpoint_label(checkpoint_path)}-{report_kind(args)}.json")


def main(args: argparse.Namespace) -> Dict:
    check_data_args(args)
    preset_network_and_crop(args)
    check_model_args(args)
    check_run_args(args)
    if args.max_norm is not None:
        raise UsageError(f"--max_norm is now --norm_cap {args.max_norm:g} (a one-shot cap of the rows, no "
                         "retraining); the paper's MaxNorm is the second stage: python scripts/maxnorm_stage.py "
                         "--resume CHECKPOINT")
    if args.norm_cap is not None and not 0.0 <= args.norm_cap <= 1.0:
        raise UsageError(f"--norm_cap {args.norm_cap} must lie in [0, 1] (a fraction of the norms' range)")
    if args.tau_norm is not None and args.norm_cap is not None:
        raise UsageError("--tau_norm and --norm_cap both rescale the rows: give one")
    for flag in ("json", "plot"):
        path = getattr(args, flag)  # "" for --plot alone: beside the report
        if path and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            raise UsageError(f"--{flag} {path!r}: its folder does not exist")
    path = evaluation_checkpoint_path(args.resume)
    linked = link_note(os.path.dirname(os.path.abspath(path)), path)
    if linked:
        print(linked)
    checkpoint = read_checkpoint(path, args.trust_checkpoint)  # a bad checkpoint is reported before the data is read
    description = checkpoint_description(checkpoint)
    if description:
        adopt_checkpoint_args(args, description["args"], MODEL_AND_DATA_FLAGS, f"checkpoint {path!r}",
                              "test.py takes the network and the data settings from the checkpoint: leave the "
                              "flag out",
                              canonical={"dataset": canonical_dataset})
    adopt_data_root(args, description, f"checkpoint {path!r}")
    device = select_device(args.gpu)
    print(set_threads(args.threads))
    data = build_data(args, views=1)
    trained_counts = (description or {}).get("train_counts")
    if trained_counts and list(trained_counts) != data.train_counts:
        raise UsageError(f"the training set under --root {args.root!r} has class counts {data.train_counts}, but "
                         f"checkpoint {path!r} was trained on {list(trained_counts)}")
    model = model_from_checkpoint(checkpoint, path, args.arch, data.num_classes, args.width)
    run_head_name, why = run_head(description)
    if args.head is None:
        args.head = run_head_name
        print(f"classifier {args.head}: {why}")
    elif args.head != run_head_name:
        print(f"classifier {args.head} (--head), not the run's evaluation head {run_head_name} ({why})")
    head = model.classifier(args.head)
    if args.tau_norm is not None:
        tau_normalize_rows_(head.weight, args.tau_norm)
    if args.norm_cap is not None:
        project_rows_(head.weight, max_norm_threshold(head.weight, args.norm_cap))
    shift = -args.logit_adjust * log_class_prior(data.train_counts) if args.logit_adjust is not None else None
    model.to(device)
    preds, targets, _ = predict(model, build_test_loader(data.test, args.workers), device, head=args.head,
                             logit_shift=shift)
    result = {**summarize(preds, targets, data.train_counts, args.shot_rule), "head": args.head,
              "tau_norm": args.tau_norm, "norm_cap": args.norm_cap, "logit_adjust": args.logit_adjust}
    epoch = checkpoint.get("epoch", "?")
    print(f"checkpoint {path} (epoch {epoch}) on the {args.dataset} test set, {len(data.test)} images"
          + (f"; tau-normalisation tau {args.tau_norm}" if args.tau_norm is not None else "")
          + (f"; one-shot norm cap {args.norm_cap}" if args.norm_cap is not None else "")
          + (f"; logit adjustment tau {args.logit_adjust}" if args.logit_adjust is not None else ""))
    print(table(result))
    report_path = args.json or default_report_path(path, checkpoint, args)
    if report_path:
        folder = os.path.dirname(os.path.abspath(report_path))
        with writing(report_path):
            if args.json:
                os.makedirs(folder, exist_ok=True)
            else:  # the run's eval/ folder: a folder of its own, not a link
                make_folder(folder)
        write_json(report_path, {"kind": "test.py", "evaluation": report_kind(args), "checkpoint": path,
                                 "checkpoint_label": checkpoint_label(path), "epoch": epoch, **result,
                                 "train_counts": data.train_counts,
                                 "confusion": confusion_cells(preds[:, 0], targets, data.num_classes)})
        print(f"report written to {report_path}")
    else:
        print("no report written: the checkpoint belongs to no run folder (none holds it, and it names none that "
              "exists); give --json PATH to keep one")
    if args.plot is not None:
        plot = args.plot or (os.path.splitext(report_path)[0] + ".png" if report_path else None)
        if plot is None:
            raise UsageError("--plot without a path writes beside the report, and this checkpoint has none (it "
                             "belongs to no run folder): give --plot PATH")
        plot_per_class(result["per_class"], data.train_counts, args.shot_rule, plot,
                       title=f"{args.dataset}, {checkpoint_label(path)} checkpoint, {report_kind(args)}: top-1 "
                             f"{result['top1']:.2f}", class_names=data.class_names)
        print(f"per-class plot written to {plot}")
    return result


if __name__ == "__main__":
    run_cli(main, get_args_parser())
