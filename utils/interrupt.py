"""Clean interruption: the first SIGINT/SIGTERM lets the current step finish, a second exits at once."""
import os
import signal
import sys
from typing import Optional


class StopRequest:
    def __init__(self) -> None:
        self.signum: Optional[int] = None

    def install(self) -> "StopRequest":
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)
        return self

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""

    @property
    def exit_code(self) -> int:
        return 128 + (self.signum or 0)

    def _handle(self, signum: int, frame) -> None:
        if self.signum is not None:
            print(f"\nsecond {signal.Signals(signum).name}: exiting now without a checkpoint", file=sys.stderr, flush=True)
            os._exit(128 + signum)
        self.signum = signum
        print(f"\n{self.name} received: finishing the current step, then writing a checkpoint "
              "(send it again to exit at once)", file=sys.stderr, flush=True)
