"""Run many `main.py` (and MaxNorm stage) processes: one queue per device, K at once per device.

Each job is a normal child process with its own log file. A job may wait for another (a
MaxNorm stage for the run it starts from); a job that fails is reported with its log's last
lines and takes only its dependents down. The first SIGINT, SIGTERM or SIGHUP (a closed
terminal) is passed on, as SIGTERM, to every running child (each saves its mid-epoch
checkpoint and exits), and the sweep stops when they have; a second one is passed on too,
and the children then exit at once. Children run in their own session, so a Ctrl-C typed in
the terminal reaches them only through the sweep.

The runs started at one moment share the CPU cores idle at that moment (`OMP_NUM_THREADS`,
unless the user set it), so a run started later on a quieter machine gets more, and one started
beside busy processes does not fight them. The progress line shows each running run's place in its
epoch and images per second, read from the last progress line of its log.
"""
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

from utils.progress import format_duration, plural
from utils.metrics_log import read_metrics
from utils.safe_files import make_folder, open_append
from utils.speed import THREADS_REASON, share_idle_cores

WAITING, RUNNING, DONE, FAILED, SKIPPED, STOPPED = "waiting", "running", "done", "failed", "skipped", "stopped"


@dataclass
class Job:
    name: str
    argv: List[str]  # the child's command after the Python interpreter
    log: str  # the child's stdout and stderr
    epochs: int = 0  # epochs to train, or the MaxNorm stage's epochs
    run_dir: Optional[str] = None  # whose metrics.jsonl counts the epochs done
    needs: Optional[str] = None  # a job that must be done first
    torchrun: bool = False  # takes every device at once, through torchrun
    stage: bool = False  # a MaxNorm stage (its log counts its epochs)
    state: str = WAITING
    note: str = ""
    seconds: float = 0.0  # wall time of this job in this sweep
    proc: Optional[subprocess.Popen] = field(default=None, repr=False)
    slots: List[int] = field(default_factory=list, repr=False)
    started: float = 0.0
    epochs_at_start: int = 0

    def epochs_done(self) -> int:
        if self.stage:
            done = [int(m.group(1)) for m in STAGE_EPOCH.finditer(log_tail(self.log, 40))]
            return max(done, default=0) if self.state == RUNNING else (self.epochs if self.state == DONE else 0)
        if not self.run_dir:
            return 0
        records = read_metrics(os.path.join(self.run_dir, "metrics.jsonl"))
        return max((r["epoch"] for r in records), default=0)

    def place(self) -> str:
        """Where the running job is, from its log's last progress line: 'epoch 3/200 step 40/194, 57 img/s'."""
        found = list(PROGRESS.finditer(log_tail(self.log, 40)))
        what = "MaxNorm stage " if self.stage else ""
        if not found:
            return f"{what}epoch {self.epochs_done()}/{self.epochs} done, starting"
        m = found[-1]
        return f"{what}epoch {m['epoch']}/{m['epochs']} step {m['step']}/{m['steps']}, {m['rate']} img/s"


# The progress lines of main.py and of the MaxNorm stage, and the stage's end-of-epoch line.
PROGRESS = re.compile(r"^(?:stage )?epoch (?P<epoch>\d+)/(?P<epochs>\d+) step (?P<step>\d+)/(?P<steps>\d+)\b.*?"
                      r"(?P<rate>\d+) img/s", re.M)
STAGE_EPOCH = re.compile(r"^stage epoch (\d+)/\d+:", re.M)
# What main.py and the MaxNorm stage print when a signal stopped them after saving their state.
STOPPED_LINE = re.compile(r"^(?:\[\w+\]:)?stopped by (?:SIG[A-Z0-9]+|a signal to another process) (?:at|after) ",
                          re.M)


def log_tail(path: str, lines: int = 8) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:]).rstrip()
    except OSError:
        return "(no log)"


class SweepLog:
    """The sweep's own messages: on the terminal while there is one, and always appended to `path`, so that
    a sweep whose terminal closed (SIGHUP) still leaves its last lines and the command that continues it."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __call__(self, message: str, error: bool = False) -> None:
        with open_append(self.path) as f:
            f.write(message + "\n")
        try:
            print(message, file=sys.stderr if error else sys.stdout, flush=True)
        except OSError:  # the terminal is gone
            pass


class Sweep:
    """Runs `jobs` on `devices` (GPU indices, or [None] for the CPU), `per_device` at once on each."""

    def __init__(self, jobs: List[Job], devices: List[Optional[int]], per_device: int = 1,
                 say: Callable[[str], None] = print, progress_every: float = 60.0) -> None:
        self.jobs, self.devices, self.say, self.every = jobs, devices, say, progress_every
        self.slots: List[Optional[int]] = [d for d in devices for _ in range(per_device)]
        self.free = list(range(len(self.slots)))
        self.stop_signal: Optional[int] = None
        self.second_signal = False
        self.by_name = {job.name: job for job in jobs}

    # ------------------------------------------------------------ children

    def _env(self, slots: List[int], threads: Optional[Tuple[int, str]]) -> Dict[str, str]:
        env = dict(os.environ)
        devices = [self.slots[i] for i in slots]
        if threads:  # the runs share the CPU's idle cores, on a GPU machine too (its data path and Python run there)
            env["OMP_NUM_THREADS"], env[THREADS_REASON] = str(threads[0]), threads[1]
        if devices[0] is not None:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(d) for d in sorted(set(devices)))
        return env

    def _start_all(self, starting: List[Tuple[Job, List[int]]]) -> None:
        """Start the jobs chosen this round; they share the cores idle now (unless OMP_NUM_THREADS was set)."""
        share = None if "OMP_NUM_THREADS" in os.environ else share_idle_cores(len(starting))
        for job, slots in starting:
            self._start(job, slots, share)

    def _start(self, job: Job, slots: List[int], share: Optional[Tuple[int, str]]) -> None:
        gpus = sorted({self.slots[i] for i in slots if self.slots[i] is not None})
        argv = list(job.argv)
        processes = 1
        if job.torchrun and len(gpus) > 1:
            argv = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={len(gpus)}"] + argv
            processes = len(gpus)
        if share and processes > 1:
            share = (max(1, share[0] // processes), share[1] + f", over its {processes} processes")
        make_folder(os.path.dirname(os.path.abspath(job.log)))
        with open_append(job.log) as log:
            log.write(f"$ python {' '.join(argv)}\n")
            log.flush()
            job.proc = subprocess.Popen([sys.executable, *argv], stdout=log, stderr=subprocess.STDOUT,
                                        env=self._env(slots, share), start_new_session=True)
        job.state, job.slots, job.started, job.epochs_at_start = RUNNING, slots, time.time(), job.epochs_done()

    def _finish(self, job: Job, code: int) -> None:
        job.seconds += time.time() - job.started
        self.free = sorted(self.free + job.slots)
        job.slots = []
        if code == 0:
            job.state = DONE
        elif self.stop_signal is not None and (code in (128 + signal.SIGTERM, -signal.SIGTERM, 128 + signal.SIGINT)
                                               or STOPPED_LINE.search(log_tail(job.log, 40))):
            job.state = STOPPED  # torchrun exits 1 when its workers stop on a signal: their own words tell
        else:
            job.state, job.note = FAILED, f"exit {code}"
            self.say(f"{job.name} failed (exit {code}); the last lines of {job.log}:\n" + log_tail(job.log))
            for other in self.jobs:
                if other.needs == job.name and other.state == WAITING:
                    other.state, other.note = SKIPPED, f"{job.name} failed"

    def _startable(self, job: Job) -> Optional[List[int]]:
        if job.state != WAITING:
            return None
        if job.needs:
            need = self.by_name[job.needs]
            if need.state in (FAILED, SKIPPED):
                job.state, job.note = SKIPPED, f"{need.name} {need.state}"
                return None
            if need.state != DONE:
                return None
        if job.torchrun:  # every device at once
            slots = list(self.free) if len(self.free) == len(self.slots) else None
        else:
            slots = self.free[:1] or None
        for i in slots or ():
            self.free.remove(i)  # taken: the next job of this round looks at what is left
        return slots

    # ------------------------------------------------------------ the loop

    def _on_signal(self, signum, frame) -> None:
        if self.stop_signal is None:
            self.stop_signal = signum
        else:  # a second signal: passed on, so the children stop at once; the sweep still ends in order
            self.second_signal = True

    def _signal_running(self) -> None:
        for job in self.jobs:
            if job.state == RUNNING:
                try:
                    os.killpg(job.proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass

    def run(self) -> Optional[int]:
        """Run every job; returns the signal number that stopped the sweep, or None when it ran out. SIGINT,
        SIGTERM and SIGHUP (a closed terminal) stop it alike: SIGTERM to every running child, which saves its
        checkpoint; a second one makes them stop at once. Either way the sweep waits for them and returns."""
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        last_line, forwarded = 0.0, 0
        try:
            while True:
                if self.stop_signal is not None and forwarded < 1 + self.second_signal:
                    running = sum(j.state == RUNNING for j in self.jobs)
                    self.say(f"stopping: SIGTERM to {plural(running, 'running run')}; each saves its checkpoint"
                             if not forwarded else f"second signal: the {plural(running, 'running run')} stop now")
                    forwarded += 1
                    self._signal_running()
                finished = False
                for job in self.jobs:
                    if job.state == RUNNING and job.proc.poll() is not None:
                        self._finish(job, job.proc.returncode)
                        finished = True
                if self.stop_signal is None:
                    starting = [(job, slots) for job in self.jobs for slots in [self._startable(job)] if slots]
                    if starting:
                        self._start_all(starting)
                running = [j for j in self.jobs if j.state == RUNNING]
                if not running and (self.stop_signal is not None or not any(j.state == WAITING for j in self.jobs)):
                    break
                if (finished and self.stop_signal is None) or time.time() - last_line >= self.every:
                    self.say(self.progress())
                    last_line = time.time()
                time.sleep(0.2)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
        self.say(self.progress())
        return self.stop_signal

    # ------------------------------------------------------------ progress

    def progress(self) -> str:
        count = {state: sum(j.state == state for j in self.jobs) for state in
                 (DONE, RUNNING, WAITING, FAILED, SKIPPED, STOPPED)}
        running = [j for j in self.jobs if j.state == RUNNING]
        parts = [f"{count[DONE]}/{len(self.jobs)} done", f"{count[RUNNING]} running"]
        if running:
            parts[-1] += " (" + ", ".join(f"{j.name} {j.place()}" for j in running) + ")"
        parts.append(f"{count[WAITING]} waiting")
        parts += [f"{count[s]} {s}" for s in (FAILED, SKIPPED, STOPPED) if count[s]]
        left = self.seconds_left(running, count[WAITING] + count[RUNNING])
        if left is not None:
            parts.append(f"about {format_duration(left)} left")
        return f"[{time.strftime('%H:%M:%S')}] " + ", ".join(parts)

    def seconds_left(self, running: List[Job], unfinished: int) -> Optional[float]:
        """The time the epochs still to run take, training runs and MaxNorm stages alike, at the seconds per
        epoch measured so far for each kind (a stage not yet measured: a training epoch's), spread over the
        slots; None before any epoch has been measured."""
        rates: Dict[bool, List[float]] = {False: [], True: []}
        for job in running:
            done = job.epochs_done() - job.epochs_at_start
            if done > 0:
                rates[job.stage].append((time.time() - job.started) / done)
        for job in self.jobs:
            if job.state == DONE and job.epochs and job.seconds:
                rates[job.stage].append(job.seconds / job.epochs)
        if not rates[False] and not rates[True]:
            return None
        per_epoch = {kind: sum(r) / len(r) for kind, r in rates.items() if r}
        per_epoch.setdefault(True, per_epoch.get(False))
        per_epoch.setdefault(False, per_epoch[True])
        seconds = sum(job.epochs * per_epoch[job.stage] for job in self.jobs if job.state == WAITING) + sum(
            max(job.epochs - job.epochs_done(), 0) * per_epoch[job.stage] for job in running)
        return seconds / max(1, min(len(self.slots), unfinished))
