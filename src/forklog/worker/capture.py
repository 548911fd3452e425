"""``capture_output`` in a worker: ``print()`` and ``sys.stderr`` writes become records.

gunicorn's own ``capture_output`` points file descriptors 1 and 2 at the
error log, so a worker's prints reach the file without the hub, unordered
with its records. forklog replaces ``sys.stdout`` and ``sys.stderr`` in the
worker with writers that log one record per line (loggers ``stdout`` at
INFO and ``stderr`` at WARNING). No thread is involved, so gevent is fine.
Output written to the descriptors directly (C extensions, subprocesses)
still goes where gunicorn sent it.
"""

from __future__ import annotations

import io
import logging
import threading

__all__ = ["LineLogger"]

#: A line longer than this is logged in pieces rather than held forever.
MAX_LINE = 64 * 1024


class LineLogger(io.TextIOBase):
    """A text stream that logs each complete line as one record."""

    def __init__(self, logger: logging.Logger, level: int, name: str) -> None:
        super().__init__()
        self.logger = logger
        self.level = level
        self._name = name
        self._pending = ""
        self._lock = threading.RLock()

    @property
    def name(self) -> str:
        return self._name

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        with self._lock:
            data = self._pending + text
            *lines, self._pending = data.split("\n")
            if len(self._pending) > MAX_LINE:
                lines.append(self._pending)
                self._pending = ""
        for line in lines:
            self.logger.log(self.level, "%s", line.rstrip("\r"))
        return len(text)

    def flush(self) -> None:
        with self._lock:
            line, self._pending = self._pending, ""
        if line:
            self.logger.log(self.level, "%s", line)

    def isatty(self) -> bool:
        return False
