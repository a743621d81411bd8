"""Which cluster job holds each run of a table, and what the scheduler says of it.

The record is `OUT/cluster.json`: for each run, the executor kind ("slurm" or "local"), its current
job id and every id it had before. Slurm is asked with `sacct` (or `squeue` where accounting is off);
a job of submitit's local executor is its controller process, alive or not.
"""
import json
import os
import subprocess
import time
from typing import Dict, Iterable, List, Optional

from utils.errors import UsageError
from utils.safe_files import write_text

RECORD = "cluster.json"
# Slurm states of a job that holds its run: waiting to start, running, or on its way back after a re-queue
QUEUED = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "SUSPENDED"}
LIVE = QUEUED | {"RUNNING", "COMPLETING", "RESIZING", "SIGNALING", "STAGE_OUT"}
ENDED = "ENDED"  # a local job whose controller has exited
UNKNOWN = "UNKNOWN"  # a job the scheduler no longer (or not yet) lists
FRESH_S = 300  # a job submitted this recently that the scheduler does not list yet counts as queued


def load_submitit():
    """submitit, or a one-line error saying how to install it."""
    try:
        import submitit
    except ImportError:
        raise UsageError("--cluster needs submitit, which is not installed: pip install submitit") from None
    return submitit


class JobBook:
    """`OUT/cluster.json`: {run name: {"kind", "job", "jobs": [every id so far], "submitted"}}."""

    def __init__(self, out: str) -> None:
        self.path = os.path.join(out, RECORD)
        try:
            with open(self.path) as f:
                self.runs: Dict[str, Dict] = json.load(f)["runs"]
        except FileNotFoundError:
            self.runs = {}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UsageError(f"{self.path} cannot be read ({exc}); it records the sweep's cluster jobs") from None

    def job(self, name: str) -> Optional[str]:
        return (self.runs.get(name) or {}).get("job")

    def ended_jobs(self, name: str) -> List[str]:
        """Every job id the run had so far (all of them have ended once it is submitted again)."""
        return list((self.runs.get(name) or {}).get("jobs", []))

    def add(self, name: str, kind: str, job_id: str) -> None:
        earlier = self.ended_jobs(name)
        self.runs[name] = {"kind": kind, "job": job_id, "jobs": earlier + [job_id],
                           "submitted": time.strftime("%Y-%m-%d %H:%M:%S")}

    def save(self) -> None:
        write_text(self.path, json.dumps({"runs": self.runs}, indent=1) + "\n")

    def holds(self, name: str, state: str) -> bool:
        """Whether the run's current job, in `state`, still holds the run: queued or running, or submitted so
        recently that a scheduler not listing it may not know it yet."""
        return state in LIVE or (state == UNKNOWN and self.fresh(name))

    def live_runs(self) -> List[str]:
        """The runs a queued or running job holds."""
        states = self.states()
        return [name for name in self.runs if self.holds(name, states[name])]

    def fresh(self, name: str) -> bool:
        """Whether the run's job was submitted so recently that a scheduler not listing it may not know it yet."""
        submitted = time.mktime(time.strptime(self.runs[name]["submitted"], "%Y-%m-%d %H:%M:%S"))
        return time.time() - submitted < FRESH_S

    def states(self) -> Dict[str, str]:
        """{run name: the scheduler's state of its current job} (empty without jobs: no scheduler is asked)."""
        by_kind: Dict[str, List[str]] = {}
        for record in self.runs.values():
            by_kind.setdefault(record["kind"], []).append(record["job"])
        known = {}
        for kind, ids in by_kind.items():
            known[kind] = slurm_states(ids) if kind == "slurm" else {i: local_state(i) for i in ids}
        return {name: known[r["kind"]].get(r["job"], UNKNOWN) for name, r in self.runs.items()}


def local_state(job_id: str) -> str:
    """RUNNING while the local executor's controller process (its pid is the job id) lives, else ENDED."""
    try:
        with open(f"/proc/{int(job_id)}/cmdline", "rb") as f:
            alive = b"submitit.local._local" in f.read()
    except (OSError, ValueError):
        alive = False
    return "RUNNING" if alive else ENDED


def slurm_states(job_ids: Iterable[str]) -> Dict[str, str]:
    """{job id: state} from sacct, or from squeue where sacct answers nothing (accounting off); a job in
    neither is absent. Array tasks that have not started are listed by range; each gets its range's state."""
    ids = sorted(set(job_ids))
    if not ids:
        return {}
    found = _parse(_ask(["sacct", "-X", "-P", "-o", "JobID,State", "-j", ",".join(ids)]), header=True)
    missing = [i for i in ids if i not in found]
    if missing:
        found.update(_parse(_ask(["squeue", "-h", "-o", "%i|%T", "-j", ",".join(missing)]), header=False))
    return {i: found[i] for i in ids if i in found}


def _ask(argv: List[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=120).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def _parse(text: str, header: bool) -> Dict[str, str]:
    """'JobID|State' lines (an array's unstarted tasks as '12_[3-5%8]') -> {'12_3': 'PENDING', ...}."""
    watcher = load_submitit().slurm.slurm.SlurmInfoWatcher()
    lines = text.strip().splitlines()
    if not header:
        lines = ["JobID|State"] + lines
    return {job: info["State"].split()[0] for job, info in watcher.read_info("\n".join(lines)).items()
            if info.get("State")}
