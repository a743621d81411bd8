"""Run folder names (data set, network, IF, method, seed, time) and the folders' creation."""
import argparse
import os
import shutil

from utils.errors import UsageError
from utils.run_lock import RunLock
from utils.run_log import run_name


def clear_unstarted_run(run_dir: str) -> None:
    """Remove a run folder that stopped before its first checkpoint (it holds nothing to keep), so that its run
    can start again under the same name; a folder in use by a live process stops instead (LockBusy)."""
    if os.path.isdir(run_dir):
        RunLock(run_dir).acquire().release()
        shutil.rmtree(run_dir)


def new_run_folder(root_log: str, name: str, exact: bool = False) -> str:
    """Create `root_log/name`, or `name-2`, `name-3`, ... when that is taken; with `exact` (a name the user or
    the sweep chose) a taken name stops (exit 2) instead: the run that holds it is not this one."""
    try:
        os.makedirs(root_log, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create run folder under --root_log {root_log!r}: {exc.strerror}") from exc
    for n in range(1, 1000):
        folder = os.path.join(root_log, name if n == 1 else f"{name}-{n}")
        try:
            os.mkdir(folder)
            return folder
        except FileExistsError:
            if exact:
                raise UsageError(f"run folder {folder!r} already exists (--name {name}): continue that run with "
                                 f"--resume {folder}, or give another --name") from None
            continue
        except OSError as exc:
            raise UsageError(f"cannot create run folder {folder!r} under --root_log: {exc.strerror}") from exc
    raise UsageError(f"--root_log {root_log!r} already holds 999 run folders named {name!r}")


def check_can_create(folder: str) -> None:
    """Stop (exit 2) unless run folders can be made in `folder`: it is a writable folder, or the nearest part
    of its path that exists is one. Nothing is created."""
    path = os.path.abspath(folder)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    if not os.path.isdir(path):
        raise UsageError(f"--root_log {folder!r}: {path!r} is a file, so no run folder can be made there")
    if not os.access(path, os.W_OK):
        raise UsageError(f"--root_log {folder!r}: {path!r} is not writable")


def variant_tag(args: argparse.Namespace) -> str:
    """The method and every switch that differs from the released GLMC, e.g. 'glmc-nocons'."""
    if args.method == "ce":
        return "ce"
    switches = [("no_global_mix", "noglobal"), ("no_local_mix", "nolocal"), ("no_consistency", "nocons"),
                ("no_reweight", "noreweight"), ("balanced_softmax", "bs")]
    parts = ["glmc"] + [tag for flag, tag in switches if getattr(args, flag)]
    if args.fixed_alpha is not None:
        parts.append(f"alpha{args.fixed_alpha:g}")
    parts += [tag for flag, value, tag in [("lambda_dist", "beta", "beta"), ("local_label", "area", "area"),
                                           ("mix_reduction", "mean", "mean")] if getattr(args, flag) == value]
    return "-".join(parts)


def run_folder_name(args: argparse.Namespace, long_tailed_subset: bool) -> str:
    """`--name`, or data set, network, IF, method, seeds and split, then the start time."""
    if getattr(args, "name", None):
        return args.name + (f"_s{args.seed}" if getattr(args, "seeds", None) else "")
    seeds = f"s{args.seed}" + (f"_d{args.data_seed}" if long_tailed_subset and args.data_seed != args.seed else "")
    return run_name({"data": args.dataset, "arch": args.arch + (f"w{args.width}" if args.arch == "resnet32" else ""),
                     "IF": f"IF{round(1 / args.imbanlance_rate):g}" if long_tailed_subset else None,
                     "method": variant_tag(args), "seed": seeds,
                     "split": None if args.split == "released" or not long_tailed_subset else args.split})
