"""The runs of a reproduction table: each cell x seed as a `main.py` command (the row's flags, then --extra, each
flag once) or a MaxNorm stage on its base run, with its run folder and log under OUT, and whether it is done.
The one-machine sweep and the cluster submission both start these, and nothing else."""
import functools
import json
import os
import shlex
from typing import Dict, List, Optional

from glmc.paper_tables import Row, Table
from scripts.maxnorm_stage import get_args_parser as stage_parser, stage_options, variant_slug
from utils.checkpoint import LATEST
from utils.errors import UsageError
from utils.metrics_log import read_metrics
from utils.run_names import clear_unstarted_run
from utils.sweep import DONE, Job

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def last_flag(argv: List[str], flag: str) -> Optional[str]:
    values = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == flag]
    return values[-1] if values else None


def run_finished(run_dir: str) -> bool:
    try:
        with open(os.path.join(run_dir, "args.json")) as f:
            epochs = json.load(f)["args"]["epochs"]
    except (OSError, ValueError, KeyError):
        return False
    return any(r["epoch"] == epochs for r in read_metrics(os.path.join(run_dir, "metrics.jsonl")))


@functools.lru_cache(maxsize=None)
def stage_recipe(maxnorm_extra: str):
    """The MaxNorm stage's options for these flags, as the stage reads them."""
    return stage_options(stage_parser().parse_args(["--resume", "x", *shlex.split(maxnorm_extra)]))


def stage_slug(maxnorm_extra: str) -> str:
    """The recipe part of the MaxNorm stage's report names for these flags, as the stage names it."""
    return variant_slug(stage_recipe(maxnorm_extra))


def stage_reports(run_dir: str, maxnorm_extra: str) -> Dict[str, str]:
    """{'last': path, 'best': path} of the MaxNorm stage's reports on the run's best checkpoint."""
    slug = stage_slug(maxnorm_extra)
    return {w: os.path.join(run_dir, "eval", f"maxnorm-best-{slug}-{w}.json") for w in ("last", "best")}


# main.py's other spellings of a flag, so that `--extra "--batch_size 16"` replaces a row's `-b 64`
FLAG_ALIASES = {"-a": "--arch", "-b": "--batch_size", "--wd": "--weight_decay", "--learning-rate": "--lr",
                "-j": "--workers", "-p": "--print_freq"}
# Flags the sweep gives every run itself, and what to use instead of giving them in --extra / --maxnorm_extra
SWEEP_FLAGS = {"--root": "reproduce.py's --root DIR", "--seed": "--seeds N or --seed_list 1,2,3",
               "--seeds": "--seeds N or --seed_list 1,2,3", "--root_log": "--out DIR (the runs go to DIR/runs)",
               "--name": "--out DIR (each run is named <row>-<column>-s<seed>)",
               "--resume": "the same reproduce.py command again (it resumes unfinished runs itself)"}


def flag_groups(tokens: List[str]) -> List[List[str]]:
    """Tokens grouped as [flag, its values...]: `--epochs 3 --channels_last` -> [[--epochs, 3], [--channels_last]]."""
    groups: List[List[str]] = []
    for token in tokens:
        if token.startswith("-") and not token.lstrip("-").replace(".", "", 1).replace("e-", "", 1).isdigit():
            groups.append([token])
        elif groups:
            groups[-1].append(token)
        else:
            groups.append([token])
    return groups


def flag_name(group: List[str]) -> str:
    flag = group[0].split("=", 1)[0]
    return FLAG_ALIASES.get(flag, flag)


def with_extra(base: List[str], extra: List[str]) -> List[str]:
    """`base` flags, less those `extra` gives again, then `extra`: each flag once in the command it makes."""
    given = {flag_name(g) for g in flag_groups(extra)}
    return [t for g in flag_groups(base) if flag_name(g) not in given for t in g] + extra


def check_extra_flags(extra: str, option: str) -> None:
    """Refuse, in --extra or --maxnorm_extra, a flag the sweep sets for every run itself (it would be
    overridden, or would clash with the sweep's own), naming what to use instead."""
    for group in flag_groups(shlex.split(extra)):
        flag = group[0].split("=", 1)[0]
        if flag in SWEEP_FLAGS:
            raise UsageError(f"{option} gives {flag}, which the sweep sets for every run itself; use "
                             f"{SWEEP_FLAGS[flag]} instead")


def make_jobs(table: Table, rows: List[Row], seeds: List[int], args, out: str) -> List[Job]:
    runs, logs, jobs = os.path.join(out, "runs"), os.path.join(out, "logs"), []
    extra = shlex.split(args.extra)
    for row in rows:
        for seed in seeds:
            for cell in row.cells:
                name = f"{row.name}-{cell.column}-s{seed}"
                if cell.is_stage:
                    base = os.path.join(runs, f"{row.name}-{cell.flags}-s{seed}")
                    job = Job(name, [os.path.join(REPO, "scripts", "maxnorm_stage.py"), "--resume", base, "--root",
                                     args.root, "--seed", str(seed), *shlex.split(args.maxnorm_extra)],
                              os.path.join(logs, name + ".log"),
                              stage_recipe(args.maxnorm_extra).epochs, needs=f"{row.name}-{cell.flags}-s{seed}",
                              stage=True)
                    if all(os.path.isfile(p) for p in stage_reports(base, args.maxnorm_extra).values()):
                        job.state = DONE
                    jobs.append(job)
                    continue
                run_dir = os.path.join(runs, name)
                argv = [os.path.join(REPO, "main.py"), *with_extra(shlex.split(cell.flags), extra), "--seed",
                        str(seed), "--root", args.root, "--root_log", runs, "--name", name]
                job = Job(name, argv, os.path.join(logs, name + ".log"), int(last_flag(argv, "--epochs") or 0),
                          run_dir, torchrun=table.torchrun)
                if run_finished(run_dir):
                    job.state = DONE
                elif os.path.isfile(os.path.join(run_dir, LATEST)):
                    job.argv = argv + ["--resume", run_dir]
                elif not args.dry_run and not args.cluster:  # (a cluster job clears it where it starts)
                    clear_unstarted_run(run_dir)  # stopped before its first checkpoint: nothing to keep
                jobs.append(job)
    return jobs
