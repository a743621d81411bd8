"""The lock that keeps a second process out of a run folder in use."""
import fcntl
import json
import os
import socket
import sys
import time
from typing import Dict, Optional

from utils.errors import UsageError, WriteFailed
from utils.safe_files import open_no_follow

LOCK = ".lock"
# The cluster job a process runs in (set by the job's own process, utils/cluster_job.py): named in the lock file, so
# that the job's next start, on another node after a pre-emption, knows the lock it finds there for its own.
CLUSTER_JOB = "GLMC_CLUSTER_JOB"


class LockBusy(UsageError):
    """The lock is held by another live process (exit 2 where nobody waits for it); `holder` names it."""

    def __init__(self, message: str, holder: str) -> None:
        super().__init__(message)
        self.holder = holder


class RunLock:
    """`<run>/.lock`: one process per run folder at a time.

    Holding the lock is holding an exclusive `flock` on that file, which the kernel drops when the
    process ends, kill -9 included: a lock file left behind locks nothing, and taking the lock is one
    atomic step, so no process can ever remove a lock another one holds. The file names its holder
    (pid, host) for the message a second process gets. A file naming another host is respected (a
    network file system may not carry the lock across machines): delete it once that run has ended.
    """

    def __init__(self, folder: str, what: str = "run folder") -> None:
        self.path, self.what = os.path.join(folder, LOCK), what
        self.fd: Optional[int] = None
        self.read_only = False  # opened read-only in a folder that cannot be written: it stays behind

    @property
    def held(self) -> bool:
        return self.fd is not None

    def acquire(self) -> "RunLock":
        host = socket.gethostname()
        for _ in range(3):
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                pid = (self._holder() or {}).get("pid", "unknown")
                raise LockBusy(f"{self.what} {os.path.dirname(self.path)!r} is in use by process {pid} "
                               f"(lock file {self.path}); wait for it to end or stop it first",
                               f"process {pid}") from None
            if not self._names(fd):  # its holder removed the file between our open and flock: take the new one
                os.close(fd)
                continue
            holder = self._holder() or {}
            if holder.get("host") not in (None, host) and holder.get("pid") is not None:
                os.close(fd)
                raise LockBusy(f"{self.what} {os.path.dirname(self.path)!r} is in use by process {holder['pid']} "
                               f"on {holder['host']} (lock file {self.path}); if that process has ended, delete "
                               "the lock file", f"process {holder['pid']} on {holder['host']}")
            self.fd = fd
            self._write_holder(host)
            return self
        raise UsageError(f"could not take the lock {self.path}; another process keeps taking it")

    def wait(self, say, poll: float = 0.5) -> "RunLock":
        """Take the lock, waiting for as long as another process holds it (`say` tells once who it is)."""
        told = False
        while True:
            try:
                return self.acquire()
            except LockBusy as busy:
                if not told:
                    say(f"waiting: {self.what} {os.path.dirname(self.path)!r} is in use by {busy.holder}")
                    told = True
                time.sleep(poll)

    def _open(self) -> int:
        """The lock file, opened without following a link (a `.lock` that links elsewhere stops, exit 2)."""
        try:
            return open_no_follow(self.path, os.O_RDWR | os.O_CREAT)
        except OSError as exc:  # (a link is refused by open_no_follow with exit 2, never read-only opened)
            try:  # a read-only folder: an existing lock file can still be locked (the write check then stops)
                fd = open_no_follow(self.path, os.O_RDONLY)
                self.read_only = True
                return fd
            except OSError:
                raise WriteFailed(self.path, exc) from exc

    def _names(self, fd: int) -> bool:
        """Whether the open file `fd` is still the file at the lock's path."""
        try:
            return os.path.samestat(os.fstat(fd), os.stat(self.path))
        except FileNotFoundError:
            return False

    def _write_holder(self, host: str) -> None:
        try:
            os.ftruncate(self.fd, 0)
            holder = {"pid": os.getpid(), "host": host}
            if os.environ.get(CLUSTER_JOB):
                holder["job"] = os.environ[CLUSTER_JOB]
            os.pwrite(self.fd, json.dumps(holder).encode(), 0)
        except OSError:
            pass  # opened read-only: the lock holds all the same

    def _holder(self) -> Optional[Dict]:
        try:
            with os.fdopen(open_no_follow(self.path, os.O_RDONLY), "rb") as f:
                holder = json.loads(f.read().decode("utf-8"))
            return holder if isinstance(holder, dict) else None
        except (OSError, ValueError, UsageError):
            return None

    def release(self) -> None:
        """Remove the file, then drop the lock (in that order: a process that opened the file meanwhile
        finds it gone and takes a new one)."""
        if self.fd is None:
            return
        try:
            if not self.read_only:  # else it cannot go; closed, it locks nothing and the next run takes it over
                os.remove(self.path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            print(f"note: the lock file {self.path} could not be removed ({exc.strerror}); it locks nothing once "
                  "this process ends, and the next run in this folder takes it over", file=sys.stderr)
        finally:
            os.close(self.fd)
            self.fd = None


def remove_stale_lock(folder: str, jobs) -> Optional[str]:
    """Remove `folder`'s lock file when it names another host and one of `jobs` (cluster job ids of this run
    that have ended: a job re-queued onto another node finds its own earlier start's lock there, which no
    flock across machines releases); what it named, or None when nothing was removed."""
    lock = RunLock(folder)
    holder = lock._holder() or {}
    if holder.get("host") in (None, socket.gethostname()) or holder.get("job") not in set(jobs):
        return None
    try:
        os.remove(lock.path)
    except FileNotFoundError:
        return None
    return f"process {holder.get('pid')} on {holder['host']} (job {holder['job']})"
