"""The method's flags of main.py (GLMC's loss and mixing, the CE baseline and the ablations), their
checks, and which of them mean something for a run."""
import argparse

from glmc.schedule import WARMUP_DATASETS
from utils.errors import UsageError

GLMC_ONLY = {"resample_weighting", "label_weighting", "contrast_weight", "beta", "lambda_dist", "local_label",
             "mix_reduction", "balanced_softmax", "no_global_mix", "no_local_mix", "no_consistency", "no_reweight",
             "fixed_alpha"}


def add_method_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("method (other defaults: the released code's behaviour)")
    g.add_argument("--resample_weighting", type=float,
                   help="q of the re-sampling loader: class weight n_c ** -q (0: uniform with replacement)")
    g.add_argument("--label_weighting", type=float,
                   help="gamma of the re-weighted soft labels: class weight n_c ** -gamma")
    g.add_argument("--contrast_weight", type=float, help="weight of the consistency loss")
    g.add_argument("--beta", type=float, default=0.5,
                   help="Beta(beta, beta) parameter; used only with --lambda_dist beta")
    g.add_argument("--lambda_dist", default="uniform", choices=["uniform", "beta"],
                   help="mixing coefficient: 'uniform' on [0, 1] as released (--beta unused), "
                        "or 'beta' = Beta(--beta, --beta) as in the paper")
    g.add_argument("--local_label", default="lambda", choices=["lambda", "area"],
                   help="label weight of the CutMix image: lambda as released, or the pasted area (paper)")
    g.add_argument("--mix_reduction", default="sum", choices=["sum", "mean"],
                   help="combine the two mixes' losses by their sum as released, or their mean (paper)")
    g.add_argument("--balanced_softmax", action="store_true",
                   help="the 'GLMC + BS' row: the re-balanced term's cross-entropy on fc_cb logits shifted by "
                        "log(class prior) (balanced softmax, Ren et al. 2020); not in the released code")
    g = parser.add_argument_group("baseline and ablations (each switch turns one part off and nothing else)")
    g.add_argument("--method", default="glmc", choices=["glmc", "ce"],
                   help="'ce': plain cross-entropy baseline (one view, no mixing, no second loader, "
                        "evaluated with fc) on the same data, backbone, schedule and evaluation")
    g.add_argument("--no_global_mix", action="store_true", help="no global MixUp: that branch sees its plain view")
    g.add_argument("--no_local_mix", action="store_true", help="no local CutMix: that branch sees its plain view")
    g.add_argument("--no_consistency", action="store_true", help="drop the consistency loss")
    g.add_argument("--no_reweight", action="store_true",
                   help="train fc_cb on the plain soft labels instead of the re-weighted ones")
    g.add_argument("--fixed_alpha", type=float, default=None,
                   help="no cumulative schedule: alpha fixed at this value (1 = balance term only)")


def check_method_args(args: argparse.Namespace) -> None:
    for flag in ("resample_weighting", "label_weighting"):
        if getattr(args, flag) < 0:
            raise UsageError(f"--{flag} {getattr(args, flag)} must not be negative")
    if args.lambda_dist == "beta" and args.beta <= 0:
        raise UsageError(f"--beta {args.beta} must be positive with --lambda_dist beta")
    if args.fixed_alpha is not None and not 0.0 <= args.fixed_alpha <= 1.0:
        raise UsageError(f"--fixed_alpha {args.fixed_alpha} must lie in [0, 1]")


def method_flag_applies(dest: str, args: argparse.Namespace) -> bool:
    """False for a method or schedule flag that this run ignores (GLMC's flags in a CE run, --beta with
    uniform lambdas, --warmup without a warm-up schedule)."""
    return not ((dest in GLMC_ONLY and args.method == "ce") or (dest == "beta" and args.lambda_dist != "beta")
                or (dest == "warmup" and args.dataset not in WARMUP_DATASETS))
