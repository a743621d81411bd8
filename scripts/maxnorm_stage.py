"""The MaxNorm second stage behind the published "+ MaxNorm" rows.

Freezes a trained GLMC network, re-trains only its classifier with the
class-balanced loss (Cui et al. 2019) and projects the classifier's rows onto the
MaxNorm ball (Alshammari et al. 2022). The defaults are the weight-balancing
authors' own second-stage demo (the GLMC authors' settings are unpublished):
augmented training images through the frozen network in train mode (BatchNorm
statistics move), batch 64, the class-balanced "softmax" loss, SGD lr 0.01,
momentum 0.9, weight decay 0.1, cosine over 10 epochs stepped at each epoch's
start, the projection once per epoch, thresh 0.1.

    python scripts/maxnorm_stage.py --resume runs/<run>      # the run's best checkpoint

The classifier re-trained (and evaluated, before and after) is the run's own
evaluation head, which the checkpoint names: `fc_cb` for GLMC and released
checkpoints, `fc` for a CE baseline or a --fixed_alpha 1 run, whose `fc_cb` was
never trained.

The network and the training set come from the checkpoint's run description
(released checkpoints: from the flags), so the classifier is re-trained on the
very images the backbone was trained on, on every data set. The test set is
evaluated after every epoch; the stage saves the last epoch as
`<checkpoint>.maxnorm.pth.tar` (`.maxnorm-<recipe>.pth.tar` for another recipe) and the
epoch with the best per-class-mean test accuracy (chosen on the test set, as the reference does) as
`<checkpoint>.maxnorm.best.pth.tar`, and writes one report for each to <run>/eval/.
Other recipes: `--loss`, `--project`, `--inputs`, `--bn`, `--lr_step`; the
stage used before this reference (`--loss cb_focal --project step --inputs
features --bn frozen --lr_step end`) is one of them.
"""
import argparse
import dataclasses
import math
import os
import sys
import time
from typing import Callable, Dict, Optional, Tuple

import torch
from torch.utils.data import DataLoader

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from datasets import (EVAL_BATCH_SIZE, build_data, canonical_dataset, make_loaders,  # noqa: E402
                      plain_training_set)
from datasets.args import add_data_args, check_data_args  # noqa: E402
from datasets.image_files import collate_fn_for  # noqa: E402
from models import model_from_checkpoint  # noqa: E402
from models.args import add_model_args, check_model_args  # noqa: E402
from utils.checkpoint import atomic_save, read_checkpoint  # noqa: E402
from utils.config import (FlagTrackingParser, add_run_args, check_run_args, command_line, run_cli,  # noqa: E402
                          select_device)
from utils.errors import RunStopped, UsageError, writing  # noqa: E402
from utils.interrupt import StopRequest  # noqa: E402
from utils.progress import format_duration, remaining_time  # noqa: E402
from glmc.maxnorm import (BN_MODES, INPUTS, LOSSES, LR_STEPS, PROJECTIONS, StageOptions, stage_lr,  # noqa: E402
                           extract_features, feature_batches, max_norm_threshold, train_second_stage)
from utils.metrics import evaluate  # noqa: E402
from utils.presets import mark_preset_flags, preset_network_and_crop  # noqa: E402
from utils.report import table  # noqa: E402
from utils.run_log import write_json  # noqa: E402
from utils.safe_files import link_note, make_folder  # noqa: E402
from utils.runs import (MODEL_AND_DATA_FLAGS, adopt_checkpoint_args, adopt_data_root,  # noqa: E402
                        check_training_set, checkpoint_description, checkpoint_label, evaluation_checkpoint_path,
                        report_folder, run_head)
from utils.speed import set_threads  # noqa: E402

BEST_NOTE = "best epoch by per-class-mean accuracy on the test set, as the reference demo keeps it"


def variant_slug(opts: StageOptions) -> str:
    """The recipe as a file-name part: 'reference', or e.g. 'losscb_focal-projectstep'."""
    return opts.variant().replace("=", "").replace(",", "-")


def choices_help(options: Dict[str, str]) -> str:
    return "; ".join(f"{k}: {v}" for k, v in options.items())


def get_args_parser() -> argparse.ArgumentParser:
    parser = FlagTrackingParser(description=__doc__.splitlines()[0])
    add_data_args(parser)
    add_model_args(parser)
    mark_preset_flags(parser, ["arch", "image_size"],
                      "the checkpoint's; for a released checkpoint the paper's value for --dataset")
    add_run_args(parser)
    ref = StageOptions()
    g = parser.add_argument_group("second stage (defaults: the weight-balancing authors' demo; -b is the batch, 64)")
    g.add_argument("--resume", required=True, help="trained GLMC checkpoint, or a run folder (its best checkpoint)")
    g.add_argument("--epochs", type=int, default=ref.epochs, help=f"default {ref.epochs}")
    g.add_argument("--lr", type=float, default=ref.lr, help=f"default {ref.lr}")
    g.add_argument("--momentum", type=float, default=ref.momentum, help=f"default {ref.momentum}")
    g.add_argument("--wd", "--weight_decay", dest="weight_decay", type=float, default=ref.weight_decay,
                   help=f"default {ref.weight_decay}")
    g.add_argument("--thresh", type=float, default=ref.thresh,
                   help=f"MaxNorm cap: min + thresh * (max - min) of the rows' norms before the stage "
                        f"(default {ref.thresh})")
    g.add_argument("--cb_beta", type=float, default=ref.cb_beta,
                   help=f"class-balanced loss beta (default {ref.cb_beta})")
    g.add_argument("--focal_gamma", type=float, default=ref.focal_gamma,
                   help=f"gamma of --loss cb_focal (default {ref.focal_gamma})")
    g.add_argument("--loss", default=ref.loss, choices=list(LOSSES), help=choices_help(LOSSES))
    g.add_argument("--project", default=ref.project, choices=list(PROJECTIONS), help=choices_help(PROJECTIONS))
    g.add_argument("--inputs", default=ref.inputs, choices=list(INPUTS), help=choices_help(INPUTS))
    g.add_argument("--bn", default=None, choices=list(BN_MODES),
                   help=choices_help(BN_MODES) + " (default: train with --inputs images, frozen with features)")
    g.add_argument("--lr_step", default=ref.lr_step, choices=list(LR_STEPS), help=choices_help(LR_STEPS))
    g.add_argument("--data_path", default="tensor", choices=["tensor", "pil"],
                   help="CIFAR augmentation on the device (tensor, default) or per image with PIL")
    g.add_argument("--progress_seconds", type=float, default=30.0,
                   help="a progress line within an epoch at least every this many seconds (default 30)")
    g.add_argument("--out", default=None,
                   help="where to save the last epoch (default: <checkpoint>.maxnorm.pth.tar beside it, "
                        "<checkpoint>.maxnorm-<recipe>.pth.tar for options other than the reference's; the best "
                        "epoch goes beside it as .best.pth.tar)")
    return parser


def stage_options(args: argparse.Namespace) -> StageOptions:
    if args.epochs <= 0 or args.lr <= 0:
        raise UsageError(f"--epochs {args.epochs} and --lr {args.lr} must be positive")
    if not 0.0 <= args.thresh <= 1.0:
        raise UsageError(f"--thresh {args.thresh} must lie in [0, 1]")
    if not 0.0 <= args.cb_beta < 1.0:
        raise UsageError(f"--cb_beta {args.cb_beta} must lie in [0, 1)")
    if args.inputs == "features" and args.bn == "train":
        raise UsageError("--bn train needs --inputs images: features are computed once, with BatchNorm frozen")
    bn = args.bn or ("frozen" if args.inputs == "features" else "train")
    return StageOptions(epochs=args.epochs, lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay,
                        batch_size=args.batch_size, thresh=args.thresh, cb_beta=args.cb_beta,
                        focal_gamma=args.focal_gamma, loss=args.loss, project=args.project, inputs=args.inputs,
                        bn=bn, lr_step=args.lr_step)


def stage_outputs(args: argparse.Namespace, opts: StageOptions, path: str) -> Tuple[str, str, str]:
    """(last epoch, best epoch, stopped state): the files the stage writes for checkpoint `path`."""
    stem = path[:-len(".pth.tar")] if path.endswith(".pth.tar") else path
    recipe = "" if opts.variant() == "reference" else "-" + variant_slug(opts)
    out_last = args.out or f"{stem}.maxnorm{recipe}.pth.tar"
    out_stem = out_last[:-len(".pth.tar")] if out_last.endswith(".pth.tar") else out_last
    return out_last, out_stem + ".best.pth.tar", out_stem + ".stopped.pth.tar"


def check_stopped_stage(saved: Dict, partial: str, identity: Dict) -> None:
    """A stopped stage's saved state continues only the same stage (recipe, source checkpoint, seed and training
    set); one of another stage stops with exit 2 instead of being overwritten."""
    if saved.get("identity") != identity:
        differs = sorted(k for k in identity if (saved.get("identity") or {}).get(k) != identity[k])
        raise UsageError(f"{partial} holds a stopped MaxNorm stage of other settings ({', '.join(differs)}); "
                         "continue it with its own flags, or delete it to start this one")


def progress_printer(epochs: int, steps: int, every: float, resumed: Optional[Dict]) -> Callable[[int, int, int], None]:
    """The stage's `on_step`: a line at the first step it trains and then at least every `every` seconds,
    with the step, images per second, and the time left in the epoch and in the stage."""
    start, last = time.time(), [0.0]
    first = (resumed["epoch"] * steps + resumed["step"]) if resumed else 0
    images = [0]

    def on_step(epoch: int, step: int, n: int) -> None:
        images[0] += n
        now = time.time()
        done = epoch * steps + step - first
        if last[0] and now - last[0] < every and not (epoch + 1 == epochs and step == steps):
            return
        last[0] = now
        elapsed = now - start
        epoch_left, stage_left = remaining_time(elapsed, done, steps - step, steps, epochs - epoch - 1)
        print(f"stage epoch {epoch + 1}/{epochs} step {step}/{steps}, {images[0] / max(elapsed, 1e-9):.0f} img/s; "
              f"{format_duration(elapsed)} elapsed, epoch about {format_duration(epoch_left)} left, stage about "
              f"{format_duration(stage_left)} left", flush=True)
    return on_step


def main(args: argparse.Namespace) -> Dict:
    check_data_args(args)
    preset_network_and_crop(args)
    check_model_args(args)
    check_run_args(args)
    opts = stage_options(args)
    path = evaluation_checkpoint_path(args.resume)
    linked = link_note(os.path.dirname(os.path.abspath(path)), path)
    if linked:
        print(linked)
    checkpoint = read_checkpoint(path, args.trust_checkpoint)
    description = checkpoint_description(checkpoint)
    if description:
        adopt_checkpoint_args(args, description["args"], MODEL_AND_DATA_FLAGS, f"checkpoint {path!r}",
                              "The stage re-trains the classifier on the checkpoint's own training set: leave "
                              "the flag out", canonical={"dataset": canonical_dataset})
    adopt_data_root(args, description, f"checkpoint {path!r}")
    device = select_device(args.gpu)
    out_last, out_best, partial = stage_outputs(args, opts, path)
    stopped = read_checkpoint(partial, args.trust_checkpoint) if os.path.isfile(partial) else None
    # a continued stage computes with the thread count it started with (CPU sums depend on it)
    print(set_threads(args.threads, stopped.get("cpu_threads") if stopped else None))
    data = build_data(args, views=1)
    check_training_set(description, data.fingerprint, args.root, path)
    model = model_from_checkpoint(checkpoint, path, args.arch, data.num_classes, args.width).to(device)
    train_loader, test_loader = make_loaders(data, args, device, resample=None, views=1)
    head, why = run_head(description)

    def test_figures(net):
        return evaluate(net, test_loader, device, data.train_counts, args.shot_rule, head)

    if opts.inputs == "features":
        plain = plain_training_set(data)
        features, labels = extract_features(model, DataLoader(plain, batch_size=EVAL_BATCH_SIZE,
                                                              num_workers=args.workers,
                                                              collate_fn=collate_fn_for(plain)), device)
        epoch_batches = feature_batches(features, labels, opts.batch_size, args.seed)
    else:
        def epoch_batches(epoch):
            return (batch for (batch,) in train_loader.epoch(epoch) if batch is not None)

    steps = len(train_loader) if opts.inputs == "images" else math.ceil(len(labels) / opts.batch_size)

    if stage_lr(opts, 0) <= 1e-12 * opts.lr:
        print(f"warning: with --epochs {opts.epochs} and --lr_step {opts.lr_step} the stage's first epoch trains at "
              "learning rate 0 (the cosine is stepped before each epoch, so the last epoch always has lr 0): the "
              "classifier learns nothing. Use --epochs 2 or more, or --lr_step end", file=sys.stderr)
    identity = {**dataclasses.asdict(opts), "source_checkpoint": os.path.abspath(path), "seed": args.seed,
                "train_fingerprint": data.fingerprint, "head": head}
    if stopped:
        check_stopped_stage(stopped, partial, identity)
    print(f"MaxNorm stage on {path}, {len(data.train)} training images, recipe: {opts.variant()}; re-trains {head} "
          f"({why})")
    if stopped:
        before = stopped["before"]
        print(f"continuing the stopped stage saved in {partial}: stage epoch {stopped['stage']['epoch'] + 1}, "
              f"after its step {stopped['stage']['step']}")
    else:
        before = test_figures(model)
    cap = stopped["stage"]["cap"] if stopped else max_norm_threshold(getattr(model, head).weight, opts.thresh)
    print(f"cap {cap:.4f}: the largest L2 norm a {head} weight row may have during the stage, min + "
          f"{opts.thresh:g} x (max - min) of the rows' norms before it (--thresh)")
    print("before:\n" + table(before), flush=True)
    again = command_line("scripts/maxnorm_stage.py", get_args_parser(), args)
    with StopRequest() as stop:
        stage = train_second_stage(model, epoch_batches, test_figures, data.train_counts, opts, device,
                                   head_name=head, resume=stopped["stage"] if stopped else None,
                                   stop=lambda: stop.signum is not None,
                                   on_step=progress_printer(opts.epochs, steps, args.progress_seconds,
                                                            stopped["stage"] if stopped else None))
        if "stopped" in stage:
            state = stage["stopped"]
            atomic_save({"state_dict": state["model"], "stage": state, "before": before, "identity": identity,
                         "cpu_threads": torch.get_num_threads()}, partial)
            raise RunStopped(f"stopped by {stop.name} at stage epoch {state['epoch'] + 1}, step {state['step']}/"
                             f"{steps}; the stage is saved in {partial}, and the same command continues it "
                             f"exactly:\n  {again}", stop.exit_code)

    kept = {k: v for k, v in checkpoint.items() if k in ("epoch", "arch", "run", "args", "train_counts")}
    settings = {**dataclasses.asdict(opts), "variant": opts.variant(), "cap": stage["cap"], "source_checkpoint": path,
                "head": head}
    best = stage["best"]
    atomic_save({**kept, "state_dict": model.state_dict(), "best_acc1": stage["last"]["top1"],
                 "maxnorm_stage": {**settings, "stage_epoch": opts.epochs}}, out_last)
    atomic_save({**kept, "state_dict": best["state_dict"], "best_acc1": best["result"]["top1"],
                 "maxnorm_stage": {**settings, "stage_epoch": best["epoch"], "selection": BEST_NOTE}}, out_best)

    label = checkpoint_label(path)
    run_dir = report_folder(path, checkpoint)
    reports = {}
    for which, figures, out, epoch in (("last", stage["last"], out_last, opts.epochs),
                                       ("best", best["result"], out_best, best["epoch"])):
        name = f"maxnorm-{label}-{variant_slug(opts)}-{which}.json"
        report = os.path.join(run_dir, "eval", name) if run_dir else out[:-len(".pth.tar")] + ".json"
        with writing(report):  # the run's eval/ folder must be a folder of its own, not a link
            make_folder(os.path.dirname(os.path.abspath(report)))
        evaluation = f"{which} epoch" + ("" if opts.variant() == "reference" else f" [{opts.variant()}]")
        write_json(report, {"kind": "maxnorm stage", "evaluation": evaluation, "checkpoint_label": label,
                            "checkpoint": out, "stage_epoch": epoch, **figures, "before": before,
                            "maxnorm_stage": settings, "history": stage["history"],
                            **({"selection": BEST_NOTE} if which == "best" else {})})
        reports[which] = report
    if os.path.lexists(partial):
        os.remove(partial)  # the stage is done: its saved state is of no more use
    print(f"after, last epoch ({opts.epochs}):\n" + table(stage["last"]))
    print(f"after, best epoch ({best['epoch']}; {BEST_NOTE}):\n" + table(best["result"]))
    print(f"written:\n  last epoch: {out_last}\n  best epoch: {out_best}\n  reports: {reports['last']}\n"
          f"           {reports['best']}")
    return {"before": before, "last": stage["last"], "best": best["result"], "best_epoch": best["epoch"],
            "history": stage["history"], "cap": stage["cap"]}


if __name__ == "__main__":
    run_cli(main, get_args_parser())
