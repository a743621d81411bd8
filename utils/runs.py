"""Self-describing runs and the rules of resume.

A run is described once, when it starts: every flag, the training set it was built
on (class counts, class names, a fingerprint of the images) and the code version.
That description is written to `args.json` and into every checkpoint, so that
`--resume`, `test.py` and the MaxNorm stage take the run's configuration from the
checkpoint instead of trusting a new command line:

- a flag the user did not give takes the checkpoint's value;
- a flag the user gave with another value stops with exit 2 (for `--resume`
  only the operational flags in `OPERATIONAL_FLAGS` may change);
- checkpoints without a description (the released ones) keep working from flags.

The run folder of a resumed run is the folder that holds the checkpoint, wherever
it now is, and its end-of-epoch records (latest and best checkpoint, metrics line)
are repaired on resume from the checkpoint's own record, whatever moment the last
process died at. (The folder's lock: utils/run_lock.py; its names: utils/run_names.py;
metrics.jsonl: utils/metrics_log.py.)
"""
import argparse
import json
import math
import os
import shlex
import subprocess
import uuid
from typing import Callable, Dict, Iterable, List, Optional, Tuple

from utils.checkpoint import BEST, LATEST, CorruptCheckpoint, atomic_copy, read_checkpoint
from utils.errors import UsageError
from utils.metrics_log import METRICS, repair_metrics
from utils.run_lock import LOCK, RunLock
from utils.safe_files import check_folder, check_regular, remove_temporaries

# Flags that may change when a run is resumed: where things are and how the host runs them,
# never what the run computes.
OPERATIONAL_FLAGS = frozenset({
    "root", "dir_train_txt", "dir_test_txt", "workers", "print_freq", "gpu", "debug", "no_tensorboard",
    "no_download", "skip_bad_images", "resume", "dry_run", "root_log", "root_model", "channels_last", "compile",
    "seeds", "name", "given_flags", "trust_checkpoint", "threads", "no_memory_check"})
# Operational flags that change the arithmetic (other kernels, sums in another order): a resume keeps the
# run's value unless the command line gives one, and says that a change ends bit-identity with an
# uninterrupted run. (The CPU thread count, which no flag records, follows the same rule: utils.speed.)
NUMERICS_FLAGS = ("channels_last", "compile")
# What test.py and the MaxNorm stage take from a checkpoint: the model and the data it was trained on.
# (--seed is not among them: the data seed is, and the stage's own shuffling may use another seed.)
MODEL_AND_DATA_FLAGS = ("dataset", "arch", "width", "num_classes", "imbanlance_rate", "split", "data_seed",
                        "image_size")
OPTION_NAMES = {"start_epoch": "--start-epoch", "batch_size": "-b/--batch_size", "arch": "-a/--arch"}
# Keys a checkpoint needs to continue training.
RESUME_KEYS = ("epoch", "state_dict", "best_acc1", "optimizer", "scheduler", "rng")


def option_name(dest: str) -> str:
    return OPTION_NAMES.get(dest, f"--{dest}")


def code_version() -> Optional[str]:
    """The git commit of this code (with '-dirty' for uncommitted changes), or None outside git."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=12"], cwd=here,
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def describe_run(args: argparse.Namespace, train_counts: List[int], class_names: Optional[List[str]],
                 train_fingerprint: str, variant: str, eval_head: Tuple[str, str], world_size: int,
                 flag_sources: Optional[Dict[str, str]] = None, run_id: Optional[str] = None,
                 cpu_threads: Optional[int] = None, data_fingerprint: str = "") -> Dict:
    """Everything that defines a run: written to args.json and into every checkpoint. `eval_head` is
    (the classifier every evaluation of the run uses, why); `flag_sources` says where each value came
    from: 'given', 'preset' (the paper's value for the data set) or 'default'; `run_id` names the run
    (a resumed run keeps its own; a new run gets a random one); `cpu_threads` is the intra-op thread
    count the run computes with (a resume keeps it: utils.speed.choose_threads); `data_fingerprint` names the
    data the training set is drawn from whatever the seed (results and tables never average across two)."""
    return {"run_id": run_id or uuid.uuid4().hex, "args": dict(vars(args)), "data_root": os.path.abspath(args.root),
            "variant": variant, "eval_head": eval_head[0], "eval_head_reason": eval_head[1], "world_size": world_size,
            "train_counts": list(train_counts), "class_names": class_names, "train_fingerprint": train_fingerprint,
            "code_version": code_version(), "flag_sources": dict(flag_sources or {}), "cpu_threads": cpu_threads,
            "data_fingerprint": data_fingerprint}


def checkpoint_description(checkpoint: Dict) -> Optional[Dict]:
    """The run description of a checkpoint; older ones of this project kept only args and counts;
    released checkpoints have none (None)."""
    if "run" in checkpoint:
        return checkpoint["run"]
    if "args" in checkpoint:
        return {"args": checkpoint["args"], "train_counts": checkpoint.get("train_counts")}
    return None


def run_head(description: Optional[Dict]) -> Tuple[str, str]:
    """(head, why) a checkpoint is evaluated with: its run's evaluation head; `fc_cb` for a released
    checkpoint (no description), as the released code evaluates."""
    if not description:
        return "fc_cb", "a checkpoint without a run description (released): fc_cb, as the released code evaluates"
    if description.get("eval_head"):
        return description["eval_head"], ("the run's evaluation head: "
                                           + description.get("eval_head_reason", "recorded in the checkpoint"))
    method = description.get("args", {}).get("method", "glmc")
    return ("fc", "the run's evaluation head: the CE baseline trains fc only") if method == "ce" else \
        ("fc_cb", "the run's evaluation head: GLMC's re-balanced classifier, as released")


def stored_value(stored_args: Dict, dest: str):
    if dest == "data_seed" and stored_args.get("data_seed") is None:
        return stored_args.get("seed")  # written before --data_seed existed: the seed chose the images
    return stored_args.get(dest)


def _same(a, b) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool) \
            and not isinstance(b, bool):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0)
    return a == b


def adopt_checkpoint_args(args: argparse.Namespace, stored_args: Dict, flags: Iterable[str], source: str,
                          why: str, canonical: Optional[Dict[str, Callable]] = None) -> None:
    """Set each of `flags` from the checkpoint's args; a flag the user gave with another value stops (exit 2).

    `canonical` maps a flag to a function giving one spelling for equivalent values (data set aliases).
    """
    given = set(getattr(args, "given_flags", ()))
    canonical = canonical or {}
    conflicts = []
    for dest in flags:
        if dest not in stored_args and not (dest == "data_seed" and "seed" in stored_args):
            continue
        value = stored_value(stored_args, dest)
        same_spelling = canonical.get(dest, lambda v: v)
        if dest in given and not _same(same_spelling(getattr(args, dest, None)), same_spelling(value)):
            conflicts.append(f"{option_name(dest)} {getattr(args, dest)} (the checkpoint has {value})")
        else:
            setattr(args, dest, value)
    if conflicts:
        raise UsageError(f"{source} was made with other settings than the command line gives: "
                         + "; ".join(conflicts) + f". {why}")


def spelled(dest: str, value) -> str:
    """A flag and its value as typed: `--channels_last`, `--no-channels_last`, `--compile off`."""
    if isinstance(value, bool):
        return f"--{dest}" if value else f"--no-{dest}"
    return f"{option_name(dest)} {'off' if value is None else value}"


def keep_numerics_flags(args: argparse.Namespace, stored_args: Dict) -> List[str]:
    """On resume, each of NUMERICS_FLAGS the command line leaves out takes the run's value; one it gives with
    another value is used, with a note (returned) that the continuation is no longer bit-identical."""
    given = set(getattr(args, "given_flags", ()))
    notes = []
    for dest in NUMERICS_FLAGS:
        if dest not in stored_args:
            continue
        stored = stored_args[dest]
        if dest not in given:
            setattr(args, dest, stored)
        elif not _same(getattr(args, dest), stored):
            notes.append(f"note: {spelled(dest, getattr(args, dest))} where the run was trained with "
                         f"{spelled(dest, stored)}: other kernels, so the continuation will not be bit-identical "
                         "to an uninterrupted run")
    return notes


def adopt_data_root(args: argparse.Namespace, description: Optional[Dict], source: str,
                    say: Callable[[str], None] = print) -> None:
    """--root from the checkpoint when the command line leaves it out: where the run found its data (the
    absolute path it recorded, else its --root as given); `say` tells which root is used."""
    if "root" in getattr(args, "given_flags", ()) or not description:
        return
    recorded = description.get("data_root") or (description.get("args") or {}).get("root")
    if not recorded or os.path.abspath(recorded) == os.path.abspath(args.root):
        return
    if os.path.exists(recorded):
        args.root = recorded
        say(f"data root {recorded} (recorded in {source}; --root to use another)")
    else:
        say(f"note: the data root recorded in {source}, {recorded!r}, no longer exists; trying --root's default "
            f"{args.root!r} (give --root where the data now is)")


def defining_flags(args: argparse.Namespace) -> List[str]:
    """Flags of this command line that define the run (all but the operational ones)."""
    return [dest for dest in vars(args) if dest not in OPERATIONAL_FLAGS]


def check_training_set(description: Optional[Dict], fingerprint: str, root: str, path: str) -> None:
    """The training set built from `root` must be the one the checkpoint was trained on (when it says)."""
    trained_on = (description or {}).get("train_fingerprint")
    if trained_on and trained_on != fingerprint:
        raise UsageError(f"the training set built from --root {root!r} is not the one checkpoint {path!r} was "
                         "trained on (other images or labels); point --root at that data")


def check_resumable(checkpoint: Dict, path: str) -> None:
    """A checkpoint training can continue from, of the run whose folder it is resumed into."""
    missing = [k for k in RESUME_KEYS if k not in checkpoint]
    if missing:
        what = "holds weights only" if "optimizer" not in checkpoint else "lacks " + ", ".join(missing)
        raise UsageError(f"--resume {path!r} {what}, so training cannot continue from it "
                         "(evaluate it with test.py instead)")
    run_dir = resumed_folders(path, checkpoint.get("run_dir"))[0]
    folder_run, checkpoint_run = read_args_json(run_dir), checkpoint_description(checkpoint)
    differences = run_differences(checkpoint_run or {}, folder_run or {})
    if differences:
        raise UsageError(f"checkpoint {path!r} is not the run of its folder {run_dir!r} (args.json there): "
                         + "; ".join(differences) + ". The new epochs would be recorded as that run's. Resume a "
                         "run from its own folder's checkpoint")


def run_differences(ours: Dict, theirs: Dict) -> List[str]:
    """How two run descriptions differ in identity, training set or a flag that defines the run (what
    either side does not record is not compared)."""
    out = []
    for key, label in (("run_id", "run id"), ("train_fingerprint", "training-set fingerprint")):
        if ours.get(key) and theirs.get(key) and ours[key] != theirs[key]:
            out.append(f"{label} {ours[key][:12]} here, {theirs[key][:12]} there")
    a, b = ours.get("args") or {}, theirs.get("args") or {}
    for dest in sorted((set(a) & set(b)) - OPERATIONAL_FLAGS):
        if not _same(stored_value(a, dest), stored_value(b, dest)):
            out.append(f"{option_name(dest)} {stored_value(a, dest)} here, {stored_value(b, dest)} there")
    return out


def read_resume_checkpoint_file(path: str, trust: bool = False) -> Dict:
    """`read_checkpoint` for --resume: a corrupted checkpoint names the newest good copy in its folder
    (the best copy, the every-20-epochs copies) and the commands that continue from it."""
    try:
        return read_checkpoint(path, trust)
    except CorruptCheckpoint as exc:
        folder = os.path.dirname(os.path.abspath(path))
        good = []
        for name in sorted(os.listdir(folder)):
            candidate = os.path.join(folder, name)
            if (name == BEST or copy_epoch(name) is not None) and not os.path.samefile(candidate, path):
                epoch = _epoch_of(candidate)
                if epoch is not None:
                    good.append((epoch, name))
        if not good:
            raise CorruptCheckpoint(f"{exc}. No good copy is left in {folder!r}: start the run again") from None
        epoch, name = max(good)
        # copied beside, then renamed over: a rename never writes into a file that another name shares (run
        # folders of older versions hard-linked their copies), where a cp onto the name would
        staged = shlex.quote(path + ".new")
        raise CorruptCheckpoint(f"{exc}. The newest good copy is {name} (epoch {epoch}); to continue from it "
                                "(the epochs after it are trained again):\n"
                                f"  cp {shlex.quote(os.path.join(folder, name))} {staged}\n"
                                f"  mv {staged} {shlex.quote(path)}\n"
                                f"  python main.py --resume {shlex.quote(path)}") from None


def read_args_json(run_dir: str) -> Optional[Dict]:
    path = os.path.join(run_dir, "args.json")
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def resume_checkpoint_path(path: str) -> str:
    """`--resume` of main.py: a checkpoint, or a run folder meaning its latest checkpoint."""
    if not os.path.isdir(path):
        if os.path.isfile(path) and os.path.basename(path) != LATEST \
                and os.path.isfile(os.path.join(os.path.dirname(os.path.abspath(path)), "args.json")):
            raise UsageError(f"--resume {path!r}: a run folder continues from its latest checkpoint, {LATEST}. "
                             f"To branch off from {os.path.basename(path)}, copy the run folder and put that file "
                             f"in the copy as {LATEST}")
        return path
    latest = os.path.join(path, LATEST)
    if os.path.isfile(latest):
        return latest
    meta = read_args_json(path)
    if meta is None:
        raise UsageError(f"--resume {path!r} is a folder without {LATEST} or args.json; it is not a run folder")
    ckpt_dir = meta.get("checkpoint_dir")
    if ckpt_dir and os.path.isfile(os.path.join(ckpt_dir, LATEST)):
        return os.path.join(ckpt_dir, LATEST)
    command = meta.get("command", "python main.py ...")
    if (meta.get("args") or {}).get("dry_run"):
        command = shlex.join(part for part in shlex.split(command) if part != "--dry_run")
        raise UsageError(f"run folder {path!r} was made by a dry run (an older version's: --dry_run now writes "
                         f"nothing), which trains nothing, so there is nothing to resume. Start the run with:\n  "
                         f"{command}")
    lock = RunLock(path).acquire()  # a run still in its first epoch holds it: "in use" is the right answer
    try:
        removed = remove_temporaries(path)
        if ckpt_dir and ckpt_dir != path and os.path.isdir(ckpt_dir):
            removed += remove_temporaries(ckpt_dir)
    finally:
        lock.release()
    cleared = f" (cleared what it left: {', '.join(removed)})" if removed else ""
    raise UsageError(f"run folder {path!r} has no checkpoint: the run stopped before its first epoch ended, "
                     f"so there is nothing to resume{cleared}. Start it again with:\n  {command}")


def evaluation_checkpoint_path(path: str) -> str:
    """`--resume` of test.py and the MaxNorm stage: a checkpoint, or a run folder meaning its best one."""
    if not os.path.isdir(path):
        return path
    for folder in (path, (read_args_json(path) or {}).get("checkpoint_dir")):
        if folder and os.path.isfile(os.path.join(folder, BEST)):
            return os.path.join(folder, BEST)
    raise UsageError(f"--resume {path!r} is a folder without {BEST}; name a checkpoint file instead")


def checkpoint_label(path: str) -> str:
    """'best', 'latest', 'epoch20' or the file's own name."""
    name = os.path.basename(path)
    if name == BEST:
        return "best"
    if name == LATEST:
        return "latest"
    epoch = copy_epoch(name)
    if epoch is not None:
        return f"epoch{epoch}"
    return name[:-len(".pth.tar")] if name.endswith(".pth.tar") else os.path.splitext(name)[0]


def copy_epoch(name: str) -> Optional[int]:
    """N of an every-20-epochs copy `<N>_ckpt.pth.tar`, else None."""
    stem = name[:-len(LATEST)]
    return int(stem[:-1]) if name.endswith(LATEST) and stem.endswith("_") and stem[:-1].isdigit() else None


def resumed_folders(checkpoint_path: str, stored_run_dir: Optional[str]) -> Tuple[str, str]:
    """(run folder, checkpoint folder) of a resumed run: the folder holding the checkpoint, wherever
    it now is; with --root_model the logs stay in the run folder recorded at the start if it exists."""
    ckpt_dir = os.path.dirname(os.path.abspath(checkpoint_path))
    if os.path.isfile(os.path.join(ckpt_dir, "args.json")):
        return ckpt_dir, ckpt_dir
    if stored_run_dir and os.path.isfile(os.path.join(stored_run_dir, "args.json")):
        return stored_run_dir, ckpt_dir
    return ckpt_dir, ckpt_dir


def run_folder_of(checkpoint_path: str) -> Optional[str]:
    """The run folder a checkpoint belongs to (None for a checkpoint outside any run folder)."""
    folder = os.path.dirname(os.path.abspath(checkpoint_path))
    return folder if os.path.isfile(os.path.join(folder, "args.json")) else None


def report_folder(checkpoint_path: str, checkpoint: Dict) -> Optional[str]:
    """Where evaluation reports of a checkpoint go (their eval/ sub-folder): the run folder that holds it,
    else the run folder its description names (checkpoints kept apart with --root_model), if it still
    exists; None for a checkpoint of no run folder."""
    folder = run_folder_of(checkpoint_path)
    if folder:
        return folder
    recorded = checkpoint.get("run_dir")
    return recorded if recorded and os.path.isfile(os.path.join(recorded, "args.json")) else None


def repair_records(run_dir: str, checkpoint_path: str, checkpoint: Dict) -> List[str]:
    """Bring metrics.jsonl and the checkpoint copies in line with the checkpoint being resumed.

    The latest checkpoint is written first at an epoch's end and then copied; a process
    that died in between left the best (or every-20-epochs) copy or the metrics line
    behind, and this writes them from the checkpoint's own record. Returns what it did.
    """
    done = []
    note = repair_metrics(os.path.join(run_dir, METRICS), checkpoint["epoch"], checkpoint.get("record"))
    if note:
        done.append(note)
    if checkpoint.get("in_epoch") or "best_epoch" not in checkpoint:
        return done  # a mid-epoch checkpoint is no epoch's end state; older checkpoints have no record
    epoch, ckpt_dir = checkpoint["epoch"], os.path.dirname(os.path.abspath(checkpoint_path))
    copies = [BEST] if checkpoint["best_epoch"] == epoch else []
    if epoch % 20 == 0:
        copies.append(f"{epoch}_{LATEST}")
    for name in copies:
        path = os.path.join(ckpt_dir, name)
        if not os.path.isfile(path) or _epoch_of(path) != epoch:
            atomic_copy(checkpoint_path, path)
            done.append(f"{name} written from {os.path.basename(checkpoint_path)} (epoch {epoch}): the last "
                        "process ended before copying it")
    return done


def _epoch_of(path: str) -> Optional[int]:
    try:
        return read_checkpoint(path).get("epoch")
    except UsageError:
        return None


# ---------------------------------------------------------------- what a run folder may hold

REPORTS = "eval"  # evaluation reports of a run's checkpoints (test.py, the MaxNorm stage)


def written_by_the_project(name: str) -> bool:
    """Whether the project creates, appends to or replaces a file of this name in a run folder."""
    return (name in (LOCK, "log.txt", METRICS, "args.json", REPORTS) or name.endswith(".pth.tar")
            or name.startswith("events.out.tfevents"))


def check_run_folder_files(*folders: str) -> None:
    """Stop (exit 2, nothing written) when an entry the project would write in a run or checkpoint folder, or
    in its eval/ folder, is a link or not a regular file: a run folder copied or downloaded from elsewhere
    must not make a resume write into another file of the user (utils/safe_files.py)."""
    for folder in dict.fromkeys(folders):
        if not os.path.isdir(folder):
            continue
        for name in sorted(os.listdir(folder)):
            path = os.path.join(folder, name)
            if name == REPORTS:
                check_folder(path)
                if os.path.isdir(path):
                    for report in sorted(os.listdir(path)):
                        check_regular(os.path.join(path, report))
            elif written_by_the_project(name):
                check_regular(path)

