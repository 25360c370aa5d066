"""Ctrl-C during training: the first press asks the loop to stop after its step and save; the second
stops at once (every file is written atomically, so nothing already written is damaged)."""

from __future__ import annotations

import signal
import threading


class StopRequest:
    """First Ctrl-C: finish the current step, save, stop. Second Ctrl-C: stop at once (files stay intact)."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        if _in_main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()
