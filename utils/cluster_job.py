"""What runs inside a cluster job: one run's process (main.py or a MaxNorm stage), continued by itself
after a pre-emption or a time limit.

submitit runs `RunInJob()` in every task of the job. Each task starts the run's command as a child
process, with the process group's variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT)
taken from the job's own environment, so that a job of N nodes x G tasks is one run of N*G processes.

Before a time limit, or at a pre-emption, Slurm sends SIGUSR2 (`--signal=USR2@...`). submitit then
calls `checkpoint()` in task 0: the child is passed the signal, finishes its step, writes its mid-epoch
checkpoint and exits; the job is re-queued, and its next start resumes from that checkpoint (a
training run gets `--resume RUN_DIR` once its checkpoint exists; a MaxNorm stage continues from the
state it saved, with the same command). Nothing of the interrupted epoch is trained twice.
"""
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence

from utils.cluster_state import ENDED, LIVE, UNKNOWN, local_state, slurm_states
from utils.distributed import rendezvous_port
from utils.run_lock import CLUSTER_JOB, remove_stale_lock
from utils.run_names import clear_unstarted_run
from utils.safe_files import make_folder, open_append, write_text
from utils.sweep import STOPPED_LINE, log_tail

REQUEUED_LINE = "re-queued: "  # the log line of each re-queue, counted by the table tool
WAITING_LINE = "waiting for job "  # a MaxNorm stage's job waiting for its base run's job
STOP_GRACE_S = 100  # for the run to reach a step boundary (several processes: a progress line) and save; < 120 s


class RunStoppedInJob(RuntimeError):
    """The run saved its checkpoint on a signal that was no re-queue (a cancelled job, a pre-emption that
    sent SIGTERM only): the next table command (or Slurm's own re-queue) continues it."""


class RunFailedInJob(RuntimeError):
    pass


class RunInJob:
    """One run of a table as a cluster job.

    argv: the command after the Python interpreter; resume_argv: the command once `resume_file` exists;
    done_file: written when the command ends well (a MaxNorm stage after its base run waits for the base's);
    wait_for: (done_file, kind, job id) of the run this one starts from, when that one was not done at
    submission; lock_dir: the run folder whose lock a re-queued start may find left on another node.
    """

    def __init__(self, name: str, argv: List[str], log: str, done_file: str,
                 resume_argv: Optional[List[str]] = None, resume_file: Optional[str] = None,
                 wait_for: Optional[Sequence[str]] = None, lock_dir: Optional[str] = None,
                 earlier_jobs: Sequence[str] = ()) -> None:
        self.name, self.argv, self.log, self.done_file = name, argv, log, done_file
        self.resume_argv, self.resume_file = resume_argv, resume_file
        self.wait_for, self.lock_dir, self.earlier_jobs = wait_for, lock_dir, list(earlier_jobs)
        self.requeues = 0
        self._proc: Optional[subprocess.Popen] = None

    def __getstate__(self) -> Dict:
        state = dict(self.__dict__)
        state["_proc"] = None  # the child of this start; the next start makes its own
        return state

    # ------------------------------------------------------------ in the job

    def __call__(self) -> int:
        env = job_environment()
        rank = env.global_rank
        log = self.log if rank == 0 else f"{os.path.splitext(self.log)[0]}.rank{rank}.log"
        make_folder(os.path.dirname(os.path.abspath(log)))
        job_id = env.job_id
        self._say(log, f"[job {job_id}, task {rank} of {env.num_tasks}, on {socket.gethostname()}]")
        if self.wait_for and rank == 0:
            self._wait_for_base(log)
        argv = self.resume_argv if self.resume_file and os.path.isfile(self.resume_file) else self.argv
        if self.lock_dir and rank == 0:
            removed = remove_stale_lock(self.lock_dir, self.earlier_jobs + [job_id])
            if removed:
                self._say(log, f"the run folder's lock was left by this run's earlier job, {removed}: removed")
            if argv is self.argv and self.resume_argv:
                clear_unstarted_run(self.lock_dir)  # an earlier start stopped before its first checkpoint
        child_env = {**os.environ, **process_group_variables(env), CLUSTER_JOB: job_id}
        with open_append(log) as out:
            out.write(f"$ python {' '.join(argv)}\n")
            out.flush()
            self._proc = subprocess.Popen([sys.executable, *argv], stdout=out, stderr=subprocess.STDOUT,
                                          env=child_env, preexec_fn=_ignore_usr2)
        code = self._wait_for_child()
        if code == 0:
            if rank == 0:
                write_text(self.done_file, "0\n")
            return 0
        if STOPPED_LINE.search(log_tail(log, 40)):
            raise RunStoppedInJob(f"{self.name} stopped by a signal (exit {code}) after saving its checkpoint; "
                                  "the same table command submits it again and it continues from there")
        raise RunFailedInJob(f"{self.name} failed (exit {code}); the last lines of {log}:\n{log_tail(log)}")

    def _wait_for_child(self) -> int:
        # poll() rather than wait(): wait() holds a lock that checkpoint(), run from a signal handler while
        # this loop runs, would need too
        while self._proc.poll() is None:
            time.sleep(0.5)
        return self._proc.returncode

    def _wait_for_base(self, log: str) -> None:
        done_file, kind, job_id = self.wait_for
        told = False
        while not os.path.isfile(done_file):
            state = slurm_states([job_id]).get(job_id, UNKNOWN) if kind == "slurm" else local_state(job_id)
            if state not in LIVE and not os.path.isfile(done_file):
                raise RunFailedInJob(f"{self.name}: the run it starts from (job {job_id}) ended without finishing "
                                     f"({'its controller exited' if state == ENDED else state})")
            if not told:
                self._say(log, f"{WAITING_LINE}{job_id}, the run this one starts from")
                told = True
            time.sleep(5)

    @staticmethod
    def _say(log: str, message: str) -> None:
        with open_append(log) as out:
            out.write(message + "\n")

    # ------------------------------------------------------------ at the signal

    def checkpoint(self, *args, **kwargs):
        """submitit's hook at SIGUSR2 (task 0 only): let the run save, then ask for the re-queue."""
        from submitit.helpers import DelayedSubmission

        place = ""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGUSR2)
            deadline = time.time() + STOP_GRACE_S
            while self._proc.poll() is None and time.time() < deadline:
                time.sleep(0.2)
            if self._proc.poll() is None:  # still starting up (the signal is ignored then): nothing new to save
                self._proc.terminate()
                try:
                    self._proc.wait(10)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
            tail = log_tail(self.log, 40)
            stopped = STOPPED_LINE.search(tail)
            place = f"; {tail[stopped.start():].splitlines()[0].rstrip(':')}" if stopped else ""
        self.requeues += 1
        self._say(self.log, f"{REQUEUED_LINE}the job was pre-empted or reached its time limit (re-queue "
                            f"{self.requeues}){place}")
        return DelayedSubmission(self, *args, **kwargs)


def _ignore_usr2() -> None:
    """In the child before it runs: SIGUSR2 does nothing until the run installs its own handler (at start-up
    there is nothing to save, and the signal's default would kill it)."""
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


def job_environment():
    import submitit

    return submitit.JobEnvironment()


def process_group_variables(env) -> Dict[str, str]:
    """torchrun's variables for this task, from the job's environment: none for a job of one task."""
    if env.num_tasks <= 1:
        return {}
    return {"RANK": str(env.global_rank), "WORLD_SIZE": str(env.num_tasks), "LOCAL_RANK": str(env.local_rank),
            "MASTER_ADDR": env.hostnames[0], "MASTER_PORT": rendezvous_port(env.raw_job_id)}
