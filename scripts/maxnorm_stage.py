"""The MaxNorm second stage behind the published "+ MaxNorm" rows.

Freezes the backbone of a trained GLMC checkpoint, re-trains only the classifier
(`fc_cb`) on the long-tailed training set with the class-balanced focal loss
(Cui et al. 2019), projecting its rows onto the MaxNorm ball after every update
(Alshammari et al. 2022), saves `<checkpoint>.maxnorm.pth.tar` beside the
original and evaluates it:

    python scripts/maxnorm_stage.py --resume runs/<run>      # the run's best checkpoint

The network and the training set come from the checkpoint's run description
(released checkpoints: from the flags), so the classifier is re-trained on the
very images the backbone was trained on. Features are computed once from
un-augmented training images with BatchNorm in evaluation mode (the backbone is
frozen, so its statistics do not change). The report goes to <run>/eval/.
"""
import argparse
import os
import sys

from torch.utils.data import DataLoader

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from datasets import (EVAL_BATCH_SIZE, build_data, build_test_loader, canonical_dataset,  # noqa: E402
                      plain_training_set)
from datasets.args import add_data_args, check_data_args  # noqa: E402
from datasets.image_files import collate_fn_for  # noqa: E402
from models import model_from_checkpoint  # noqa: E402
from models.args import add_model_args, check_model_args  # noqa: E402
from utils.checkpoint import atomic_save, read_checkpoint  # noqa: E402
from utils.config import FlagTrackingParser, add_run_args, check_run_args, run_cli  # noqa: E402
from utils.config import select_device  # noqa: E402
from utils.errors import UsageError, writing  # noqa: E402
from utils.maxnorm import extract_features, train_classifier_max_norm  # noqa: E402
from utils.metrics import evaluate  # noqa: E402
from utils.report import table  # noqa: E402
from utils.run_log import write_json  # noqa: E402
from utils.runs import (MODEL_AND_DATA_FLAGS, adopt_checkpoint_args, checkpoint_description,  # noqa: E402
                        check_training_set, checkpoint_label, evaluation_checkpoint_path, run_folder_of)


def get_args_parser() -> argparse.ArgumentParser:
    parser = FlagTrackingParser(description=__doc__.splitlines()[0])
    add_data_args(parser)
    add_model_args(parser)
    add_run_args(parser)
    g = parser.add_argument_group("second stage (defaults: the weight-balancing paper's recipe)")
    g.add_argument("--resume", required=True, help="trained GLMC checkpoint, or a run folder (its best checkpoint)")
    g.add_argument("--epochs", type=int, default=10)
    g.add_argument("--lr", type=float, default=0.01)
    g.add_argument("--momentum", type=float, default=0.9)
    g.add_argument("--wd", "--weight_decay", dest="weight_decay", type=float, default=0.1)
    g.add_argument("--thresh", type=float, default=0.1, help="MaxNorm cap: min + thresh * (max - min) of the row norms")
    g.add_argument("--cb_beta", type=float, default=0.9999, help="class-balanced loss beta")
    g.add_argument("--focal_gamma", type=float, default=2.0, help="focal loss gamma")
    g.add_argument("--out", default=None, help="where to save (default: <checkpoint>.maxnorm.pth.tar beside it)")
    return parser


def main(args: argparse.Namespace):
    check_data_args(args)
    check_model_args(args)
    check_run_args(args)
    if args.epochs <= 0 or args.lr <= 0:
        raise UsageError(f"--epochs {args.epochs} and --lr {args.lr} must be positive")
    if not 0.0 <= args.thresh <= 1.0:
        raise UsageError(f"--thresh {args.thresh} must lie in [0, 1]")
    path = evaluation_checkpoint_path(args.resume)
    checkpoint = read_checkpoint(path)
    description = checkpoint_description(checkpoint)
    if description:
        adopt_checkpoint_args(args, description["args"], MODEL_AND_DATA_FLAGS, f"checkpoint {path!r}",
                              "The stage re-trains the classifier on the checkpoint's own training set: leave "
                              "the flag out", canonical={"dataset": canonical_dataset})
    device = select_device(args.gpu)
    data = build_data(args, views=1)
    check_training_set(description, data.fingerprint, args.root, path)
    model = model_from_checkpoint(checkpoint, path, args.arch, data.num_classes, args.width).to(device)
    test_loader = build_test_loader(data.test, args.workers)
    before = evaluate(model, test_loader, device, data.train_counts, args.shot_rule)
    plain_train = plain_training_set(data)
    features, labels = extract_features(model, DataLoader(plain_train, batch_size=EVAL_BATCH_SIZE,
                                                          num_workers=args.workers,
                                                          collate_fn=collate_fn_for(plain_train)), device)
    stats = train_classifier_max_norm(model.fc_cb, features, labels, data.train_counts, epochs=args.epochs,
                                      lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay,
                                      thresh=args.thresh, batch_size=args.batch_size, cb_beta=args.cb_beta,
                                      focal_gamma=args.focal_gamma, seed=args.seed)
    after = evaluate(model, test_loader, device, data.train_counts, args.shot_rule)
    stem = path[:-len(".pth.tar")] if path.endswith(".pth.tar") else path
    out = args.out or stem + ".maxnorm.pth.tar"
    stage = {k: v for k, v in vars(args).items() if k != "given_flags"}
    atomic_save({**{k: v for k, v in checkpoint.items() if k in ("epoch", "arch", "run", "args", "train_counts")},
                 "state_dict": model.state_dict(), "best_acc1": after["top1"],
                 "maxnorm_stage": {**stage, **stats}}, out)
    run_dir = run_folder_of(path)
    report = (os.path.join(run_dir, "eval", f"maxnorm-{checkpoint_label(path)}.json") if run_dir
              else out[:-len(".pth.tar")] + ".json")
    with writing(report):
        os.makedirs(os.path.dirname(report), exist_ok=True)
    write_json(report, {"kind": "maxnorm stage", "evaluation": "last", "checkpoint_label": checkpoint_label(path),
                        "source_checkpoint": path, "checkpoint": out, **after, "maxnorm_stage": stats})
    print(f"MaxNorm stage on {path}: cap {stats['cap']:.4f}, {args.epochs} epochs; saved {out} and {report}")
    print("before:\n" + table(before) + "\nafter:\n" + table(after))
    return before, after


if __name__ == "__main__":
    run_cli(main, get_args_parser())
