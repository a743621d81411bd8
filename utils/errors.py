"""Exceptions that end a run with a clear message instead of a traceback, and their exit codes.

    2  a bad flag, file or value (UsageError)
    3  the run diverged: a non-finite loss, weight or BatchNorm statistic
    4  a write failed (disk full, no permission, folder gone); the last good checkpoint is intact
    128 + N  stopped by signal N (130 for Ctrl-C, 143 for SIGTERM)
"""
import contextlib
import errno
import os
import re
import shutil

EXIT_USAGE, EXIT_DIVERGED, EXIT_WRITE_FAILED = 2, 3, 4


def tidy_message(message: str) -> str:
    """A message as printed: a sentence that ends in a quoted message's own full stop gets one stop, not
    two ('... not a checkpoint.. Name' becomes '... not a checkpoint. Name'); an ellipsis is left alone."""
    return re.sub(r"(?<!\.)\.\.(?!\.)", ".", message)


class UsageError(Exception):
    """A bad flag, file or value; the message names it and says what was expected (exit code 2)."""


class RunStopped(Exception):
    """Training stopped on purpose (a signal, a non-finite loss, a failed write); carries the exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class WriteFailed(RunStopped):
    """A file of the run could not be written (exit code 4)."""

    def __init__(self, path: str, cause: OSError, advice: str = "") -> None:
        reason = cause.strerror or str(cause)
        super().__init__(f"cannot write {path}: {reason}" + (f". {advice}" if advice else ""), EXIT_WRITE_FAILED)
        self.path, self.cause = path, cause


def write_cause(exc: BaseException, path: str) -> OSError:
    """The OSError behind a failed write: the exception itself, or the one it was raised from (torch.save
    wraps a full disk in a RuntimeError); failing that, 'No space left on device' when `path`'s disk is
    full, else an I/O error carrying the exception's first line."""
    seen: BaseException = exc
    while seen is not None:
        if isinstance(seen, OSError):
            return seen
        seen = seen.__cause__ or seen.__context__
    try:
        full = shutil.disk_usage(os.path.dirname(os.path.abspath(path))).free < 2 ** 20
    except OSError:
        full = False
    if full:
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return OSError(errno.EIO, f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}")


@contextlib.contextmanager
def writing(path: str):
    """Turn an error raised while writing `path` (an OSError, or the RuntimeError torch.save raises for one)
    into WriteFailed naming the path and the cause."""
    try:
        yield
    except WriteFailed:
        raise
    except (OSError, RuntimeError) as exc:
        raise WriteFailed(path, write_cause(exc, path)) from exc
