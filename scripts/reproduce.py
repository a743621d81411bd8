"""Reproduce one of the paper's tables: every row, several seeds, on the GPUs present, beside the published numbers.

    python scripts/reproduce.py cifar10-lt --seeds 3 --root data
    python scripts/reproduce.py cifar100-lt --seed_list 1,2,3 --gpus 0,1 --per_gpu 2 --out runs/c100
    python scripts/reproduce.py cifar10-lt --seeds 2 --extra "--width 16 --epochs 3" --root data   # a CPU try-out
    python scripts/reproduce.py imagenet-lt --root /data/imagenet --gpus 0,1,2,3,4,5,6,7
    python scripts/reproduce.py cifar10-lt --seeds 3 --root /shared/data --cluster slurm --slurm_partition gpu

Tables: cifar10-lt, cifar100-lt (IF 100, 50, 10; the paper's original split, the
updated split, + MaxNorm), imagenet-lt (GLMC, + BS), inat2018, and cifar-lt-standard
(both CIFAR data sets with ResNet-32 at width 16 and the Cao et al. split, the protocol
most long-tailed papers use; no published GLMC figures). Each run is a normal
`main.py` process with its own run folder `OUT/runs/<row>-<column>-s<seed>`; a "+ MaxNorm"
cell runs `scripts/maxnorm_stage.py` on the same row's updated runs (nothing is trained
twice). One queue per GPU, --per_gpu runs at once on each; ImageNet-LT and iNat runs take
every listed GPU through torchrun, one at a time. With no GPU the runs go to the CPU.

The same command again skips finished runs, resumes unfinished ones from their
checkpoints and starts the rest; Ctrl-C or SIGTERM stops every run cleanly and prints the
command that continues. The result goes to OUT/table.md, OUT/table.csv and OUT/table.png.
With --cluster, every run is a cluster job instead and the command ends once they are
queued; the same command again reports each run's state, submits what is neither done
nor queued nor running, and writes the table from what has finished.
"""
import argparse
import json
import os
import shlex
import subprocess
import sys
from typing import Dict, List, Optional, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from datasets import source_fingerprint  # noqa: E402
from glmc.paper_tables import TABLES, Row, Table  # noqa: E402
from scripts import released_models  # noqa: E402
from scripts.table_report import titled, write_table  # noqa: E402
from scripts.table_runs import check_extra_flags, last_flag, make_jobs  # noqa: E402
from utils.cluster import ClusterOptions, parse_extra, submit  # noqa: E402
from utils.cluster_state import JobBook, load_submitit  # noqa: E402
from utils.config import Parser  # noqa: E402
from utils.errors import UsageError, tidy_message  # noqa: E402
from utils.progress import plural  # noqa: E402
from utils.run_lock import RunLock  # noqa: E402
from utils.safe_files import write_text  # noqa: E402
from utils.sweep import DONE, FAILED, Job, Sweep, SweepLog  # noqa: E402

MANIFEST = "reproduce.json"
def get_args_parser() -> argparse.ArgumentParser:
    parser = Parser(description=__doc__.splitlines()[0], epilog="\n".join(__doc__.splitlines()[1:]),
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("table", help="one of: " + ", ".join(TABLES) + "; or released: the authors' released models")
    parser.add_argument("assign", nargs="*", metavar="ROW=FILE",
                        help="released only: the checkpoint of a row, where its file is not named <row>.pth.tar")
    parser.add_argument("--checkpoints", default=None,
                        help="released only: the folder of the downloaded models, each named <row>.pth.tar")
    seeds = parser.add_mutually_exclusive_group()
    seeds.add_argument("--seeds", type=int, default=None, help="seeds 1..N (default 3)")
    seeds.add_argument("--seed_list", default=None, help="comma-separated seeds, e.g. 1,2,3")
    parser.add_argument("--gpus", default=None, help="GPU indices, e.g. 0,1 (default: every GPU; the CPU if none)")
    parser.add_argument("--per_gpu", type=int, default=1, help="runs at once per GPU (or on the CPU) (default 1)")
    parser.add_argument("--out", default=None, help="folder of the sweep (default: runs/reproduce/TABLE)")
    parser.add_argument("--root", default="data", help="data root given to every run (default: data)")
    parser.add_argument("--extra", default="", help="flags added to every main.py command, e.g. \"--epochs 3\" "
                                                      "(a single flag as --extra=--flag)")
    parser.add_argument("--maxnorm_extra", default="", help="flags added to every MaxNorm stage, e.g. \"--epochs 2\"")
    parser.add_argument("--rows", default=None, help="comma-separated row names, to run part of the table "
                                                     "(default: every row; --dry_run lists them)")
    parser.add_argument("--progress_every", type=float, default=60.0, help="seconds between progress lines (60)")
    parser.add_argument("--dry_run", action="store_true", help="list the runs, their state and commands; run nothing "
                                                               "(with --cluster: the job scripts; submit nothing)")
    cluster = parser.add_argument_group(
        "on a cluster (needs submitit)",
        "Every run becomes a cluster job in its own run folder under --out (a shared file system); training runs "
        "go in one job array, each MaxNorm stage waits for its base run's job. The command ends once the jobs "
        "are queued; the same command again shows each run's state, submits what is neither done nor queued "
        "nor running, and writes the table from what has finished. A job warned of its time limit or "
        "pre-empted saves its checkpoint and is re-queued, and continues from there by itself.")
    cluster.add_argument("--cluster", choices=["slurm", "local"], default=None,
                         help="slurm: submit to Slurm; local: submitit's local executor, real processes on this "
                              "machine, to try a table's submission (default: run here, as above)")
    cluster.add_argument("--timeout_min", type=int, default=24 * 60,
                         help="each job's time limit in minutes (default 1440); a run that needs longer goes on in "
                              "re-queued jobs")
    cluster.add_argument("--gpus_per_run", type=int, default=None,
                         help="GPUs per node of a training run's job, one process each (default: 8 for "
                              "imagenet-lt and inat2018, 1 otherwise; 0 for nodes without GPUs)")
    cluster.add_argument("--nodes_per_run", type=int, default=1, help="nodes of a training run's job (default 1)")
    cluster.add_argument("--slurm_partition", default=None, help="sbatch --partition")
    cluster.add_argument("--slurm_account", default=None, help="sbatch --account")
    cluster.add_argument("--slurm_qos", default=None, help="sbatch --qos")
    cluster.add_argument("--slurm_constraint", default=None, help="sbatch --constraint")
    cluster.add_argument("--slurm_extra", action="append", default=[], metavar="KEY=VALUE",
                         help="any other sbatch option, e.g. --slurm_extra mem=64G --slurm_extra cpus-per-task=10")
    return parser


SLURM_ONLY = ("slurm_partition", "slurm_account", "slurm_qos", "slurm_constraint", "slurm_extra")
MULTI_GPU_TABLE_GPUS = 8  # the GPUs the paper's ImageNet-LT and iNaturalist runs are given by default


def cluster_options(args, table: Table) -> ClusterOptions:
    """The --cluster flags, checked against the rest of the command."""
    given = [f"--{k}" for k in SLURM_ONLY if getattr(args, k)]
    if given and args.cluster != "slurm":
        raise UsageError(f"{', '.join(given)} {'is' if len(given) == 1 else 'are'} for --cluster slurm")
    if args.gpus is not None or args.per_gpu != 1:
        raise UsageError("--gpus and --per_gpu choose this machine's GPUs; with --cluster, use --gpus_per_run")
    gpus = args.gpus_per_run if args.gpus_per_run is not None else MULTI_GPU_TABLE_GPUS if table.torchrun else 1
    options = ClusterOptions(args.cluster, args.timeout_min, gpus, args.nodes_per_run, args.slurm_partition,
                             args.slurm_account, args.slurm_qos, args.slurm_constraint, parse_extra(args.slurm_extra))
    options.check(submitting=not args.dry_run)
    return options


def seed_list(args) -> List[int]:
    if args.seed_list:
        try:
            seeds = [int(s) for s in args.seed_list.split(",") if s.strip()]
        except ValueError:
            raise UsageError(f"--seed_list {args.seed_list!r} must be comma-separated integers") from None
    elif args.seeds is not None and args.seeds < 1:
        raise UsageError(f"--seeds {args.seeds} must be 1 or more")
    else:
        seeds = list(range(1, (args.seeds or 3) + 1))
    if not seeds or len(set(seeds)) != len(seeds):
        raise UsageError("the seeds must be distinct and at least one")
    return seeds


def devices(gpus: Optional[str]) -> List[Optional[int]]:
    count = torch.cuda.device_count()
    if gpus is None:
        return list(range(count)) or [None]
    try:
        wanted = [int(g) for g in gpus.split(",") if g.strip()]
    except ValueError:
        raise UsageError(f"--gpus {gpus!r} must be comma-separated GPU indices, e.g. 0,1") from None
    missing = [g for g in wanted if not 0 <= g < count]
    if missing or not wanted:
        raise UsageError(f"--gpus {gpus}: this machine has {plural(count, 'GPU')}"
                         + (f" (indices 0 to {count - 1})" if count else "; leave --gpus out to run on the CPU"))
    return wanted


def chosen_rows(table: Table, rows: Optional[str]) -> List[Row]:
    if not rows:
        return list(table.rows)
    names = [r.strip() for r in rows.split(",") if r.strip()]
    unknown = [n for n in names if n not in {r.name for r in table.rows}]
    if unknown:
        raise UsageError(f"--rows: {', '.join(unknown)} not in {table.name}; its rows: "
                         + ", ".join(r.name for r in table.rows))
    return [r for r in table.rows if r.name in names]


def data_sets(rows: List[Row]) -> List[str]:
    """The data sets the rows' training cells use (their --dataset)."""
    return sorted({last_flag(shlex.split(cell.flags), "--dataset") for row in rows for cell in row.cells
                   if not cell.is_stage} - {None})


def check_data(manifest: Dict, rows: List[Row], root: str, out: str) -> None:
    """The data under `root` must be the data the sweep's runs were trained on: each data set's fingerprint (the
    CIFAR release's training images, the training list) is recorded the first time and compared after."""
    recorded = manifest.setdefault("data", {})
    for dataset in data_sets(rows):
        now = source_fingerprint(dataset, root)
        if now and recorded.get(dataset) and recorded[dataset] != now:
            raise UsageError(f"--out {out!r} holds runs trained on other {dataset} data than the one under --root "
                             f"{root!r} (fingerprint {recorded[dataset][:12]} recorded, {now[:12]} there): its runs "
                             "would be averaged with these. Use another --out, or the data they were trained on")
        if now:
            recorded.setdefault(dataset, now)


def check_out_folder(out: str, args, seeds: List[int], rows: List[Row]) -> Dict:
    """The sweep's manifest; a folder holding another table's sweep, or one made with other flags, another data
    root or other data, stops."""
    path = os.path.join(out, MANIFEST)
    settings = {"table": args.table, "extra": args.extra, "maxnorm_extra": args.maxnorm_extra,
                "root": os.path.abspath(args.root)}
    if os.path.isfile(path):
        with open(path) as f:
            manifest = json.load(f)
        manifest.setdefault("root", settings["root"])  # recorded since 2026-12: older sweeps take this one
        for key, value in settings.items():
            if manifest.get(key) != value:
                what = "data root" if key == "root" else key
                raise UsageError(f"--out {out!r} holds a sweep made with {what} {manifest.get(key)!r}, not {value!r}: "
                                 "its runs would be mixed with these in one table. Use another --out, or the same "
                                 "settings to continue it")
        check_data(manifest, rows, args.root, out)
        return manifest
    runs = os.path.join(out, "runs")
    names = {f"{row.name}-{cell.column}" for row in TABLES[args.table].rows for cell in row.cells}
    if os.path.isdir(runs):
        foreign = [n for n in os.listdir(runs) if n.rsplit("-s", 1)[0] not in names]
        if foreign:
            raise UsageError(f"--out {out!r} holds runs of another table ({', '.join(sorted(foreign)[:3])}); "
                             "use another --out")
    manifest = {**settings, "seconds": {}}
    check_data(manifest, rows, args.root, out)
    return manifest


def check_first_run(jobs: List[Job], gpus: List[Optional[int]]) -> Optional[str]:
    """`main.py --dry_run` of the first run still to start (flags, data, model, memory; it writes nothing),
    so that a bad --extra or --root stops here instead of failing every run of the table; the command
    checked, or None when every run left is a resume or a MaxNorm stage. Runs that torchrun spreads over
    several GPUs are not checked in one process, whose memory estimate would be for the whole batch."""
    fresh = [j for j in jobs if j.state != DONE and not j.stage and "--resume" not in j.argv
             and not (j.torchrun and len(gpus) > 1)]
    if not fresh:
        return None
    argv = [sys.executable, *fresh[0].argv, "--dry_run"]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    if gpus[0] is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(gpus[0])  # the first device the sweep uses
    done = subprocess.run(argv, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        lines = [line for line in (done.stderr or done.stdout).strip().splitlines() if line.strip()]
        raise UsageError(f"the first run ({fresh[0].name}) does not start; nothing was started. Its check, "
                         f"python {shlex.join(argv[1:])}, said:\n  " + "\n  ".join(lines[-3:] or ["(no output)"]))
    return "python " + shlex.join(argv[1:])


# ---------------------------------------------------------------- main

def print_plan(jobs: List[Job], gpus: List[Optional[int]], args) -> None:
    """--dry_run: every run, its state and its command."""
    for job in jobs:
        resumes = "--resume" in job.argv and not job.stage
        what = "done" if job.state == DONE else "to resume" if resumes else "to run"
        print(f"{job.name}: {what}" + (f" (after {job.needs})" if job.needs else "")
              + f"\n  python {shlex.join(job.argv)}")
    print(f"{plural(len(jobs), 'run')}, {sum(j.state == DONE for j in jobs)} done; devices: "
          + (", ".join(f"GPU {g}" for g in gpus) if gpus[0] is not None else "the CPU")
          + f", {args.per_gpu} at once on each", flush=True)


def main(argv=None) -> int:
    args = get_args_parser().parse_intermixed_args(argv)  # ROW=FILE arguments may follow the flags
    if args.table == "released":
        return released_models.run(args.checkpoints, args.assign, args.root,
                                   args.out or os.path.join("runs", "reproduce", "released"), args.rows, args.dry_run)
    if args.assign or args.checkpoints:
        raise UsageError("ROW=FILE arguments and --checkpoints are for the released table only")
    if args.table not in TABLES:
        raise UsageError(f"unknown table {args.table!r}; the tables: {', '.join(TABLES)}, released")
    if args.per_gpu < 1:
        raise UsageError(f"--per_gpu {args.per_gpu} must be 1 or more")
    check_extra_flags(args.extra, "--extra")
    check_extra_flags(args.maxnorm_extra, "--maxnorm_extra")
    table, seeds = TABLES[args.table], seed_list(args)
    rows = chosen_rows(table, args.rows)
    if args.cluster:
        load_submitit()
        options, gpus = cluster_options(args, table), [None]  # the check of the first run runs here, on the CPU
    else:
        options, gpus = None, devices(args.gpus)
    out = args.out or os.path.join("runs", "reproduce", args.table)
    if args.dry_run:  # the whole plan first, then the check of the first run to start (exit 2 if it fails)
        manifest = check_out_folder(out, args, seeds, rows)
        book, states = cluster_jobs(out) if options else (None, None)
        jobs = make_jobs(table, rows, seeds, args, out)
        if options:
            check_batch_split(jobs, options)
            submit(jobs, options, out, table.name, print, book, states, dry_run=True)
        else:
            print_plan(jobs, gpus, args)
        checked = check_first_run(jobs, gpus)
        print(f"the first run's setup checked with:\n  {checked}" if checked else "no new run to check")
        return 0
    made = not os.path.exists(out)
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--out {out!r} cannot be made: {exc.strerror}") from None
    lock = RunLock(out, "sweep folder").acquire()  # one sweep (or submission) per folder at a time
    try:
        if not options:
            check_no_cluster_jobs(out)
        manifest = check_out_folder(out, args, seeds, rows)
        book, states = cluster_jobs(out) if options else (None, None)
        jobs = make_jobs(table, rows, seeds, args, out)
        if options:
            check_batch_split(jobs, options)
        check_first_run(jobs, gpus)
    except UsageError:
        lock.release()
        if made and not os.listdir(out):
            os.rmdir(out)  # nothing started: nothing left behind either
        raise
    try:
        if options:
            return submit_table(args, table, rows, seeds, out, manifest, jobs, options, book, states)
        return run_sweep(args, table, rows, seeds, gpus, out, manifest, jobs, argv)
    finally:
        lock.release()


def cluster_jobs(out: str) -> Tuple[JobBook, Dict[str, str]]:
    """The sweep's cluster jobs and their states, asked before the run folders are read: a run whose job ends
    in between then counts as done, never as a job that ended without finishing its run."""
    book = JobBook(out)
    return book, book.states()


def check_no_cluster_jobs(out: str) -> None:
    """A sweep on this machine never runs what a queued or running cluster job of the same folder holds."""
    book = JobBook(out)
    live = sorted(book.live_runs())
    if live:
        kind = book.runs[live[0]]["kind"]
        raise UsageError(f"--out {out!r} has {plural(len(live), 'run')} queued or running as {kind} jobs "
                         f"({', '.join(live[:3])}{', ...' if len(live) > 3 else ''}): continue the table with "
                         f"--cluster {kind}, or cancel those jobs first")


def check_batch_split(jobs: List[Job], options: ClusterOptions) -> None:
    """Each training run's global batch (-b) must split evenly over its job's processes (nodes x GPUs)."""
    processes = options.nodes_per_run * max(1, options.gpus_per_run)
    for job in jobs:
        batch = None if job.stage else last_flag(job.argv, "-b") or last_flag(job.argv, "--batch_size")
        if batch and int(batch) % processes:
            raise UsageError(f"{job.name}: -b {batch} (the global batch) does not split over the {processes} "
                             f"processes of its job ({plural(options.nodes_per_run, 'node')} x "
                             f"{max(1, options.gpus_per_run)} per node); give --extra \"-b N\" with N a multiple "
                             f"of {processes}, or other --nodes_per_run / --gpus_per_run")


def submit_table(args, table: Table, rows: List[Row], seeds: List[int], out: str, manifest: Dict, jobs: List[Job],
                 options: ClusterOptions, book: JobBook, states: Dict[str, str]) -> int:
    """--cluster: where each run stands, the submission of the runs neither done nor queued nor running, and
    the table of what has finished; the command ends without waiting for the jobs."""
    say = SweepLog(os.path.join(out, "sweep.log"))
    manifest["seeds"] = sorted(set(manifest.get("seeds", [])) | set(seeds))
    write_text(os.path.join(out, MANIFEST), json.dumps(manifest, indent=1))
    say(f"{titled(table, args, jobs)}: {plural(len(jobs), 'run')} in {out}, as {options.kind} jobs")
    counts = submit(jobs, options, out, table.name, say, book, states)
    write_table(args, table, rows, seeds, out, manifest, jobs, say)
    say(f"{counts['done']}/{len(jobs)} done, {counts['held']} queued or running, {counts['submitted']} submitted "
        "now. The same command again shows where each run stands, submits what is neither done nor queued nor "
        "running, and writes the table from what has finished")
    return 0


def run_sweep(args, table: Table, rows: List[Row], seeds: List[int], gpus: List[Optional[int]], out: str,
              manifest: Dict, jobs: List[Job], argv) -> int:
    """Run the jobs, then write the table; the record (manifest) is saved before anything is printed, and every
    message also goes to OUT/sweep.log, so a sweep whose terminal closed loses nothing."""
    say = SweepLog(os.path.join(out, "sweep.log"))
    manifest["seeds"] = sorted(set(manifest.get("seeds", [])) | set(seeds))
    write_text(os.path.join(out, MANIFEST), json.dumps(manifest, indent=1))
    todo = [j for j in jobs if j.state != DONE]
    say(f"{titled(table, args, jobs)}: {plural(len(jobs), 'run')} ({len(jobs) - len(todo)} already done) in {out} on "
        + (", ".join(f"GPU {g}" for g in gpus) if gpus[0] is not None else "the CPU")
        + f", {args.per_gpu} at once on each; logs in {os.path.join(out, 'logs')}")
    stopped = Sweep(jobs, gpus, args.per_gpu, say=say, progress_every=args.progress_every).run()
    for job in jobs:
        if job.seconds:
            manifest["seconds"][job.name] = manifest["seconds"].get(job.name, 0.0) + job.seconds
    write_text(os.path.join(out, MANIFEST), json.dumps(manifest, indent=1))
    write_table(args, table, rows, seeds, out, manifest, jobs, say)
    if stopped is not None:
        again = "python " + shlex.join([os.path.relpath(os.path.abspath(__file__)), *(argv or sys.argv[1:])])
        say(f"stopped; finished runs are kept and stopped ones saved their checkpoints. Continue with:\n  {again}",
            error=True)
        return 128 + stopped
    failed = [j.name for j in jobs if j.state == FAILED]
    if failed:
        say(f"{plural(len(failed), 'run')} failed: {', '.join(failed)} (logs in {os.path.join(out, 'logs')})",
            error=True)
        return 1
    return 0


def cli(argv=None) -> None:
    """main() with a bad table, flag or folder ending in one line and exit 2."""
    try:
        code = main(argv)
    except UsageError as exc:
        print(tidy_message(f"error: {exc}"), file=sys.stderr)
        code = 2
    sys.exit(code)


if __name__ == "__main__":
    cli()
