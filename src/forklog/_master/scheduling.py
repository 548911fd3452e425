"""The master's own threads stay out of the workers' way when they wake.

The receiver, the listener, the network sinks and the gzip job wake up
hundreds of times a second under load. Under Linux's default policy a
thread that wakes takes a CPU from whatever runs there at once: on a
machine whose workers keep every CPU busy, that is a worker in the middle
of a request, and a log call that took 9 µs takes 50 (``python -m
benchmarks``, p99 of the log call). ``SCHED_BATCH`` changes only that: a
waking thread waits for the running one's time slice to end instead of
preempting it. It keeps its share of the CPU (the same nice weight), and on
an idle CPU it runs as soon as it wakes. Any user may choose it for their
own threads; a thread of a process under a real-time policy, or one the
administrator set otherwise, is left as it is.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from typing import Any, Optional

from forklog import _hub_thread

__all__ = ["DispatchLock", "background"]

#: Whether the master's threads ask for SCHED_BATCH (Linux only).
BATCH = True


def background() -> None:
    """Mark the calling thread as the hub's, and as background work: it never preempts a worker on waking."""
    _hub_thread.mark()
    if not BATCH or not hasattr(os, "SCHED_BATCH"):
        return
    with contextlib.suppress(OSError):
        # pid 0 is the calling thread: Linux schedules threads, not processes.
        if os.sched_getscheduler(0) == os.SCHED_OTHER:
            os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))


class DispatchLock:
    """The lock the listener holds while it hands records to the sinks, and since when.

    A fork takes it to find the listener between two writes (DESIGN H6),
    waiting for a batch at most ``most`` seconds from the batch's start:
    a batch that has run longer is stuck in a sink (a hung disk), and the
    fork goes ahead at once, the child letting go of the sinks' files
    without a flush.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        #: time.monotonic() when the holder took it; None while free.
        self.held_since: Optional[float] = None

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        got = self._lock.acquire(blocking, timeout)
        if got:
            self.held_since = time.monotonic()
        return got

    def release(self) -> None:
        self.held_since = None
        self._lock.release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def acquire_for_fork(self, most: float) -> bool:
        """Take it unless the holder's batch has run ``most`` seconds: never wait on a stuck sink."""
        since = self.held_since
        wait = most if since is None else since + most - time.monotonic()
        return self.acquire(True, wait) if wait > 0 else self.acquire(False)
