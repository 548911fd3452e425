"""``capture_output`` in a worker: ``print()`` and ``sys.stderr`` writes become records.

gunicorn's own ``capture_output`` points file descriptors 1 and 2 at the
error log, so a worker's prints reach the file without the hub, unordered
with its records. forklog replaces ``sys.stdout`` and ``sys.stderr`` in the
worker with writers that log one record per line (loggers ``stdout`` at
INFO and ``stderr`` at WARNING). No thread is involved, so gevent is fine.
They are streams in every way code expects of ``sys.stdout``: an
``encoding``, a ``buffer`` that takes bytes (click writes there), and the
``fileno()`` of the stream they replace, so what writes to the descriptor
itself (``faulthandler``, ``subprocess.run(stdout=sys.stdout)``, C
extensions) still goes where gunicorn sent it.
"""

from __future__ import annotations

import contextlib
import io
import logging
import threading
from typing import Any, Optional, Union

__all__ = ["LineLogger"]

#: A line longer than this is logged in pieces rather than held forever.
MAX_LINE = 64 * 1024


class LineLogger(io.TextIOBase):
    """A text stream that logs each complete line as one record."""

    def __init__(self, logger: logging.Logger, level: int, name: str, original: Optional[Any] = None) -> None:
        super().__init__()
        self.logger = logger
        self.level = level
        self._name = name
        self._pending = ""
        self._lock = threading.RLock()
        self._original = original
        self._buffer = _Bytes(self)
        self._busy = _Busy()

    @property
    def name(self) -> str:
        return self._name

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    @property
    def errors(self) -> str:  # type: ignore[override]
        return "backslashreplace"

    @property
    def buffer(self) -> io.BufferedIOBase:
        """Bytes written here are decoded (UTF-8) and logged like text."""
        return self._buffer

    def fileno(self) -> int:
        """The descriptor of the stream this one replaces (gunicorn's error log under capture_output)."""
        if self._original is None:
            raise io.UnsupportedOperation("fileno")
        return int(self._original.fileno())

    def writable(self) -> bool:
        return True

    def write(self, text: Union[str, bytes, bytearray]) -> int:
        if isinstance(text, (bytes, bytearray)):
            text = bytes(text).decode("utf-8", "backslashreplace")
        elif not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        with self._lock:
            data = self._pending + text
            *lines, self._pending = data.split("\n")
            if len(self._pending) > MAX_LINE:
                lines.append(self._pending)
                self._pending = ""
        for line in lines:
            self._log(line.rstrip("\r"))
        return len(text)

    def flush(self) -> None:
        with self._lock:
            line, self._pending = self._pending, ""
        if line:
            self._log(line)

    def _log(self, line: str) -> None:
        """One line as a record; to the stream this one replaces when no handler would take it.

        Once the application configured logging, the hub's handler may be on
        no logger this record passes: the stdlib's ``lastResort`` would take
        it and write to ``sys.stderr``, this stream, again. The line goes
        where plain gunicorn sends it instead (its descriptor: the error log
        under ``capture_output``), and so does a write made while a line of
        this stream is being logged.
        """
        if self._busy.active or not self.logger.hasHandlers():
            self._write_original(line + "\n")
            return
        self._busy.active = True
        try:
            self.logger.log(self.level, "%s", line)
        finally:
            self._busy.active = False

    def _write_original(self, text: str) -> None:
        original = self._original
        with contextlib.suppress(Exception):
            if original is not None:
                original.write(text)
                original.flush()

    def isatty(self) -> bool:
        return False


class _Busy(threading.local):
    active = False


class _Bytes(io.BufferedIOBase):
    """``LineLogger.buffer``: bytes in, records out."""

    def __init__(self, owner: LineLogger) -> None:
        super().__init__()
        self._owner = owner

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self._owner.write(chunk)
        return len(chunk)

    def flush(self) -> None:
        self._owner.flush()

    def fileno(self) -> int:
        return self._owner.fileno()
