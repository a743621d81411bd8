"""Exceptions that end a run with a clear message instead of a traceback."""


class UsageError(Exception):
    """A bad flag, file or value; the message names it and says what was expected (exit code 2)."""


class RunStopped(Exception):
    """Training stopped on purpose (a signal, a non-finite loss); carries the exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code
