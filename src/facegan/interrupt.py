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


def die_with_parent(parent_pid: int, signum: int = signal.SIGTERM) -> None:
    """Have the kernel send `signum` to this process when its parent dies (Linux PR_SET_PDEATHSIG), so a
    worker never outlives a killed `study run` or `data prepare`; exit now if the parent is already gone.
    Elsewhere a no-op: the parent's own clean-up still stops its workers on a normal exit."""
    import os
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signum), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent_pid:  # the parent died before the call above: nobody would send the signal
        os._exit(1)
