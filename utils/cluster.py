"""A table's runs as cluster jobs, through submitit: Slurm, or submitit's local executor (real processes on
this machine, to try a table's submission before a cluster sees it).

The runs are the one-machine sweep's `Job`s (utils/sweep.py): the same commands, run folders, logs and
dependencies (a MaxNorm stage after its base run); only who starts them differs. Training runs go in
one job array per submission; a MaxNorm stage is a job of its own that Slurm holds until its base run's
job has ended well (`afterok`). Each run's job is recorded in OUT/cluster.json, so that the same command
again reports where each run stands and submits only the runs that are neither done nor queued nor
running. Everything submitit writes (job scripts, pickles, its own logs) goes to OUT/jobs.
"""
import contextlib
import os
import shlex
import shutil
import sys
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Optional, Tuple

from utils.checkpoint import LATEST
from utils.cluster_job import REQUEUED_LINE, WAITING_LINE, RunInJob
from utils.cluster_state import QUEUED, UNKNOWN, JobBook, load_submitit
from utils.errors import UsageError
from utils.progress import plural
from utils.safe_files import make_folder, open_no_follow
from utils.sweep import DONE, RUNNING, STOPPED_LINE, Job, log_tail

JOBS_FOLDER = "jobs"
MAX_TIME_LIMITS = 100  # re-queues after a time limit before submitit gives up on a run (pre-emptions: no limit)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass
class ClusterOptions:
    kind: str  # "slurm" or "local"
    timeout_min: int = 24 * 60
    gpus_per_run: int = 1  # GPUs per node of a training run's job (one task each); 0 for CPU-only nodes
    nodes_per_run: int = 1
    partition: Optional[str] = None
    account: Optional[str] = None
    qos: Optional[str] = None
    constraint: Optional[str] = None
    extra: Dict[str, str] = field(default_factory=dict)  # any other sbatch option: {"mem": "64G"}
    signal_delay_s: int = 120  # SIGUSR2 this long before the time limit

    def check(self, submitting: bool = True) -> None:
        """The flags' values; and, for a submission to Slurm (not a dry run), srun on the PATH."""
        for flag, value, low in (("--timeout_min", self.timeout_min, 1), ("--gpus_per_run", self.gpus_per_run, 0),
                                 ("--nodes_per_run", self.nodes_per_run, 1)):
            if value < low:
                raise UsageError(f"{flag} {value} must be {low} or more")
        if self.kind == "local" and self.nodes_per_run > 1:
            raise UsageError(f"--nodes_per_run {self.nodes_per_run}: the local executor runs on this machine only")
        if self.signal_delay_s >= self.timeout_min * 60:
            raise UsageError(f"--timeout_min {self.timeout_min} leaves no time before the signal that comes "
                             f"{self.signal_delay_s} s before the limit")
        if submitting and self.kind == "slurm" and shutil.which("srun") is None:
            raise UsageError("--cluster slurm: no srun on this machine's PATH; submit from a node of the Slurm "
                             "cluster (or try the table with --cluster local)")


def parse_extra(items: List[str]) -> Dict[str, str]:
    """--slurm_extra KEY=VALUE ... -> {KEY: VALUE} (sbatch's own option names, e.g. mem=64G, cpus-per-task=10)."""
    extra = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--slurm_extra {item!r} must be KEY=VALUE, an sbatch option, e.g. mem=64G")
        extra[key.strip().lstrip("-")] = value
    return extra


def parameters(options: ClusterOptions, name: str, nodes: int, gpus: int,
               dependency: Optional[str] = None) -> Dict:
    """The executor's parameters for a job of `nodes` x max(1, `gpus`) tasks (one per GPU): Slurm's names
    as submitit's SlurmExecutor takes them, or the local executor's."""
    tasks = max(1, gpus)
    if options.kind == "local":
        return {"timeout_min": options.timeout_min, "tasks_per_node": tasks, "gpus_per_node": gpus,
                "signal_delay_s": options.signal_delay_s}
    chosen = {"job_name": name, "time": options.timeout_min, "nodes": nodes, "ntasks_per_node": tasks,
              "gpus_per_node": gpus or None, "partition": options.partition, "account": options.account,
              "qos": options.qos, "constraint": options.constraint, "signal_delay_s": options.signal_delay_s,
              "stderr_to_stdout": True, "dependency": dependency,
              "setup": [f"export PYTHONPATH={shlex.quote(REPO)}${{PYTHONPATH:+:$PYTHONPATH}}"],
              # --requeue: the job may be re-queued (by submitit at the signal, by Slurm when a node fails)
              "additional_parameters": {"requeue": True, **({"kill-on-invalid-dep": "yes"} if dependency else {}),
                                        **options.extra}}
    return {k: v for k, v in chosen.items() if v is not None}


def sbatch_script(folder: str, params: Dict, count: int) -> str:
    """The job script submitit writes for these parameters (an array of `count` tasks when count > 1)."""
    slurm = load_submitit().slurm.slurm
    command = " ".join([shlex.quote(sys.executable), "-u -m submitit.core._submit", shlex.quote(folder)])
    return slurm._make_sbatch_string(command=command, folder=folder, **params,
                                     **({"map_count": count} if count > 1 else {}))


def make_executor(options: ClusterOptions, folder: str, params: Dict):
    submitit = load_submitit()
    if options.kind == "local":
        executor = submitit.LocalExecutor(folder, max_num_timeout=MAX_TIME_LIMITS)
    else:
        executor = submitit.SlurmExecutor(folder, max_num_timeout=MAX_TIME_LIMITS)  # (srun checked before)
    executor.update_parameters(**params)
    return executor


@contextlib.contextmanager
def output_to(path: str) -> Iterator[None]:
    """This process's stdout and stderr go to `path` meanwhile: the local executor's controllers, started
    now, inherit them and outlive this command, which must not hold its terminal or pipe open."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    fd = open_no_follow(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for f in saved + [fd]:
            os.close(f)


# ---------------------------------------------------------------- where each run stands

def run_state(job: Job, book: JobBook, state: Optional[str]) -> Tuple[str, bool]:
    """(what to say of the run, whether it is held by a live job)."""
    record = book.runs.get(job.name)
    requeues = log_tail(job.log, 10 ** 6).count(REQUEUED_LINE) if record else 0
    again = f", re-queued {plural(requeues, 'time')} after a pre-emption or time limit" if requeues else ""
    if job.state == DONE:
        return "done" + again, False
    if record is None:
        return "not submitted yet", False
    if book.holds(job.name, state) and (state in QUEUED or state == UNKNOWN):
        return f"queued (job {record['job']}{', ' + state.lower() if state != 'PENDING' else ''}){again}", True
    if book.holds(job.name, state):
        job.state = RUNNING
        last = log_tail(job.log, 1)
        place = f"waiting for {job.needs}'s job" if last.startswith(WAITING_LINE) else job.place()
        return f"running (job {record['job']}): {place}{again}", True
    if STOPPED_LINE.search(log_tail(job.log, 40)):
        return f"stopped with its checkpoint saved (job {record['job']}, {state.lower()}){again}", False
    return (f"ended without finishing (job {record['job']}, {state.lower()}){again}; the last lines of "
            f"{job.log}:\n    " + log_tail(job.log, 5).replace("\n", "\n    "), False)


def run_in_job(job: Job, out: str, book: JobBook, wait_for: Optional[Tuple[str, str, str]]) -> RunInJob:
    """The job's callable for one run: its command, with `--resume RUN_DIR` once the run has a checkpoint
    (a MaxNorm stage continues from its saved state with its own command)."""
    if job.stage or "--resume" in job.argv:
        resume_argv = resume_file = None
    else:
        resume_argv, resume_file = job.argv + ["--resume", job.run_dir], os.path.join(job.run_dir, LATEST)
    return RunInJob(job.name, job.argv, job.log, done_file(out, job.name), resume_argv, resume_file, wait_for,
                    None if job.stage else job.run_dir, book.ended_jobs(job.name))


def done_file(out: str, name: str) -> str:
    return os.path.join(out, JOBS_FOLDER, f"{name}.done")


def submit(jobs: List[Job], options: ClusterOptions, out: str, table_name: str, say: Callable[..., None],
           book: JobBook, states: Dict[str, str], dry_run: bool = False) -> Dict[str, int]:
    """Report every run's state, then submit those neither done nor held by a live job (none with
    `dry_run`, which prints the job scripts instead); the count of runs in each state. `book` holds the
    sweep's jobs and `states` what the scheduler said of them, asked before the jobs' DONE was read."""
    folder = os.path.abspath(os.path.join(out, JOBS_FOLDER))
    held, todo = {}, []
    for job in jobs:
        words, live = run_state(job, book, states.get(job.name))
        say(f"{job.name}: {words}")
        if live:
            held[job.name] = book.job(job.name)
            job.state = words.split()[0]  # queued or running, for the table's "not done" column
        elif job.state != DONE:
            todo.append(job)
    counts = {"done": sum(j.state == DONE for j in jobs), "held": len(held), "submitted": 0}
    if not todo:
        say("nothing to submit: every run is done, queued or running")
        return counts
    training = [j for j in todo if not j.stage]
    stages = [j for j in todo if j.stage]
    name = f"glmc-{table_name}"
    train_params = parameters(options, name, options.nodes_per_run, options.gpus_per_run)
    if dry_run:
        print_plan(options, folder, name, training, stages, train_params, held)
        return counts
    make_folder(folder)
    submitted: Dict[str, str] = {}

    def note(job_name: str, job_id: str) -> None:  # recorded at once: a failure later never loses a live job
        submitted[job_name] = job_id
        book.add(job_name, options.kind, job_id)
        book.save()

    try:
        with detached(options, out):
            if training:
                executor = make_executor(options, folder, train_params)
                with executor.batch():
                    handles = [executor.submit(run_in_job(j, out, book, None)) for j in training]
                for job, handle in zip(training, handles):
                    note(job.name, handle.job_id)
            for job in stages:
                base = submitted.get(job.needs) or held.get(job.needs)
                dependency = f"afterok:{base}" if base and options.kind == "slurm" else None
                wait_for = (done_file(out, job.needs), options.kind, base) if base else None
                executor = make_executor(options, folder, parameters(options, f"{name}-maxnorm", 1,
                                                                     min(options.gpus_per_run, 1), dependency))
                note(job.name, executor.submit(run_in_job(job, out, book, wait_for)).job_id)
    except KeyboardInterrupt:
        say(f"interrupted (Ctrl-C): {plural(len(submitted), 'job')} submitted and recorded; the same command again "
            "submits the rest", error=True)
        raise SystemExit(130) from None
    except (OSError, RuntimeError) as exc:  # sbatch refused (submitit's FailedJobError), a controller did not start
        done = f"; the {plural(len(submitted), 'job')} submitted before it are recorded" if submitted else ""
        raise UsageError(f"the submission failed: {str(exc).strip() or type(exc).__name__}{done}. The same command "
                         "again submits the rest") from None
    for job in todo:
        job.state = "submitted"
    counts["submitted"] = len(submitted)
    say(f"submitted {plural(len(submitted), 'job')}: " + ", ".join(f"{n} ({i})" for n, i in submitted.items()))
    return counts


@contextlib.contextmanager
def detached(options: ClusterOptions, out: str) -> Iterator[None]:
    """For the local executor, whose controllers start now and inherit this process's environment and output:
    the project on their PYTHONPATH (the jobs import utils.cluster_job), their output to OUT/jobs."""
    if options.kind != "local":
        yield
        return
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = REPO + (os.pathsep + before if before else "")
    try:
        with output_to(os.path.join(out, JOBS_FOLDER, "local-executor.log")):
            yield
    finally:
        if before is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = before


def print_plan(options: ClusterOptions, folder: str, name: str, training: List[Job], stages: List[Job],
               train_params: Dict, held: Dict[str, str]) -> None:
    """--dry_run: the job scripts (Slurm) or the executor's parameters (local), and each job's command."""
    if training:
        print(f"\n# {plural(len(training), 'training run')}" + (" as one job array" if len(training) > 1 else ""))
        print(sbatch_script(folder, train_params, len(training)) if options.kind == "slurm"
              else f"local executor: {train_params}")
        for i, job in enumerate(training):
            print(f"# array index {i}: {job.name}\n#   python {shlex.join(job.argv)}")
    for job in stages:
        base = "its base run's job" if job.needs in held or job.needs in {j.name for j in training} else None
        dependency = f"afterok:<the job of {job.needs}>" if base and options.kind == "slurm" else None
        params = parameters(options, f"{name}-maxnorm", 1, min(options.gpus_per_run, 1), dependency)
        print(f"\n# {job.name}" + (f", after {job.needs}" if base else ""))
        print(sbatch_script(folder, params, 1) if options.kind == "slurm" else f"local executor: {params}")
        print(f"#   python {shlex.join(job.argv)}")
