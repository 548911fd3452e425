"""Problems of the hub itself, reported on stderr at a bounded rate.

The hub cannot report its own faults through its sinks (a failing sink is
often the fault), so it writes them to file descriptor 2 directly: no
Python-level lock, no buffer that a fork could inherit half-written. Each
kind of problem is printed at most once per ``interval`` seconds, with the
number of occurrences since the last line, never once per record. Both sides
use it: the master for its own faults, an emitting process for records kept
out of the hub (:data:`feedback_reporter`).
"""

from __future__ import annotations

import os
import threading
import time
from typing import Dict, Tuple

from forklog._wire.controls import escape_controls

__all__ = ["Reporter", "feedback_reporter"]


class Reporter:
    def __init__(self, interval: float = 5.0, fd: int = 2) -> None:
        self.interval = interval
        self.fd = fd
        self._lock = threading.Lock()
        # kind -> (time of the last line, occurrences not yet printed)
        self._seen: Dict[str, Tuple[float, int]] = {}
        self.lines = 0

    def report(self, kind: str, text: str) -> None:
        """Count one occurrence of ``kind``; print ``text`` if the rate allows."""
        now = time.monotonic()
        with self._lock:
            last, pending = self._seen.get(kind, (-self.interval, 0))
            if now - last < self.interval:
                self._seen[kind] = (last, pending + 1)
                return
            self._seen[kind] = (now, 0)
        more = f" (and {pending} more since the last report)" if pending else ""
        self.write(f"forklog: {text.removeprefix('forklog: ')}{more}")

    def write(self, line: str) -> None:
        """Print one line now, whatever the rate."""
        # What it says can hold a worker's text (a path it asked for): no control
        # character reaches the operator's terminal raw, one line stays one line.
        data = (escape_controls(line.rstrip("\n")) + "\n").encode("utf-8", "backslashreplace")
        try:
            os.write(self.fd, data)
            self.lines += 1
        except OSError:
            pass  # stderr closed: nowhere left to say it


#: Says on stderr, at most every 5 s with a count, that records logged on
#: the hub's own threads were kept out of it (forklog._worker.channel.Channel._feedback).
feedback_reporter = Reporter()
