"""Sinks tuned for a single writer per process: the hub's listener.

``logging.handlers.RotatingFileHandler`` decides on every record whether to
roll over by formatting the record a second time, asking the text stream for
its position (``TextIOWrapper.tell()``, slow) and, since Python 3.11,
calling ``os.path.exists`` and ``os.path.isfile``: two ``stat`` calls per
record. With one writer, the file's size can simply be counted.

Two processes can still share a file: during a USR2 upgrade the old and the
new gunicorn master each run a hub on the same path. So the sink writes
whole lines only, a batch at a time, with one ``write()`` on an ``O_APPEND``
descriptor (another process's lines land between batches, never inside a
line), and rotates under an ``flock`` after checking that the path is still
the file it has open: if another process rotated first, it reopens instead
of renaming that process's fresh file over the old one.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import logging.handlers
import os
from typing import Any, List, TextIO, cast

__all__ = ["RotatingFileSink"]


class RotatingFileSink(logging.handlers.RotatingFileHandler):
    """A ``RotatingFileHandler`` that counts what it writes and writes whole lines.

    Rotation happens when the next line would take the file past
    ``maxBytes`` (counted in characters, which is bytes for ASCII text).
    Lines are held until :meth:`flush`, which the hub calls once per batch
    (and ``emit`` itself calls when the sink is used on its own).
    """

    _size = 0

    def _open(self) -> Any:
        stream = cast(TextIO, super()._open())
        self._size = os.fstat(stream.fileno()).st_size
        self._lines: List[str] = []
        return stream

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + self.terminator
            if self.stream is None:  # closed by a reopen that failed, or by close()
                self.stream = self._open()
            if self.maxBytes > 0 and self._size and self._size + len(line) > self.maxBytes:
                self._write_out()
                self.doRollover()
            self._lines.append(line)
            self._size += len(line)
            self.flush()
        except RecursionError:
            raise
        except Exception:  # noqa: BLE001 - the logging contract: report, never raise
            self.handleError(record)

    def flush(self) -> None:
        with self.lock if self.lock is not None else contextlib.nullcontext():
            self._write_out()

    def _write_out(self) -> None:
        lines = getattr(self, "_lines", None)
        if not lines or self.stream is None:
            return
        stream = self.stream
        data = "".join(lines).encode(stream.encoding or "utf-8", stream.errors or "strict")
        lines.clear()
        fd = stream.fileno()
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]

    def doRollover(self) -> None:
        """Rotate, unless another process sharing the file already did: then reopen."""
        lock_path = self.baseFilename + ".lock"
        with open(lock_path, "a") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                mine = os.fstat(self.stream.fileno()) if self.stream is not None else None
                try:
                    current = os.stat(self.baseFilename)
                except FileNotFoundError:
                    current = None
                rotated_elsewhere = (
                    mine is not None
                    and current is not None
                    and (mine.st_ino, mine.st_dev) != (current.st_ino, current.st_dev)
                )
                if rotated_elsewhere:
                    if self.stream is not None:
                        self.stream.close()
                    self.stream = self._open()
                else:
                    super().doRollover()
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.flush()
        super().close()
