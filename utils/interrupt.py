"""Clean interruption: Ctrl-C at start-up exits 130 with one line; during training the first
SIGINT/SIGTERM/SIGUSR2 lets the current step finish and saves a checkpoint, a second SIGINT or SIGTERM
exits at once. SIGUSR2 is a cluster's warning before a time limit or a pre-emption (Slurm's
`--signal=USR2@...`, which submitit asks for): it may reach the process twice, straight from the
scheduler and through the job's own process, so a repeated one is no reason to give up the checkpoint."""
import os
import signal
import sys
from typing import Callable, Optional

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2)
EXIT_INTERRUPTED = 128 + signal.SIGINT


INTERRUPTED_MESSAGE = "interrupted (Ctrl-C)"


def _exit_now(signum, frame) -> None:
    print(INTERRUPTED_MESSAGE, file=sys.stderr, flush=True)
    os._exit(EXIT_INTERRUPTED)


def exit_on_ctrl_c() -> None:
    """Ctrl-C exits at once with code 130 and one line. For the scripts' imports, before anything
    is written: an exception raised there could be swallowed by a library's catch-all."""
    signal.signal(signal.SIGINT, _exit_now)


class StopRequest:
    """Context manager that records the first signal and restores the previous handlers on exit."""

    def __init__(self, also: Optional[Callable[[str], None]] = None) -> None:
        """`also(message)` receives each message printed to stderr too (e.g. the run's log file)."""
        self.signum: Optional[int] = None
        self._previous = {}
        self._also = also

    def __enter__(self) -> "StopRequest":
        for sig in SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""

    @property
    def exit_code(self) -> int:
        """128 + the signal number (SIGTERM's when the stop came from another process of the run)."""
        return 128 + (self.signum or signal.SIGTERM)

    def _handle(self, signum: int, frame) -> None:
        if self.signum is not None and signum == signal.SIGUSR2:
            return  # the cluster's warning again: the checkpoint is on its way
        if self.signum is not None:
            self._say(f"second {signal.Signals(signum).name}: exiting now without a checkpoint")
            os._exit(128 + signum)
        self.signum = signum
        if signum == signal.SIGUSR2:
            self._say("SIGUSR2 received (the cluster's warning before a time limit or a pre-emption): finishing "
                      "the current step, then writing a checkpoint")
        else:
            self._say(f"{self.name} received: finishing the current step, then writing a checkpoint "
                      "(send it again to exit at once)")

    def _say(self, message: str) -> None:
        print("\n" + message, file=sys.stderr, flush=True)
        if self._also:
            try:
                self._also(message)
            except Exception:  # a log that cannot be written must not break the signal handler
                pass
