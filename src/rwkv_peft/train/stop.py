"""Ctrl-C during a one-process run: finish the step under way, write checkpoint-last, then stop; a second Ctrl-C
stops at once. `--resume auto` then continues from the step the run stopped at, not from the last periodic
checkpoint.

Several processes are left to their launcher: torchrun turns Ctrl-C into a termination of every worker, which no
rank can postpone until a common step.
"""

import signal
import sys
import threading


class StopRequest:
    """Context manager; `requested` becomes True at the first SIGINT (main thread of a one-process run only)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.requested = False
        self._previous = None

    def __enter__(self) -> "StopRequest":
        if self.enabled:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nrwkv-peft train: stopping after this step and saving checkpoint-last (Ctrl-C again to stop now)",
              file=sys.stderr, flush=True)

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
