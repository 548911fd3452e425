"""Sinks tuned for a single writer: the hub's listener.

``logging.handlers.RotatingFileHandler`` decides on every record whether to
roll over by formatting the record a second time, asking the text stream for
its position (``TextIOWrapper.tell()``, slow) and, since Python 3.11,
calling ``os.path.exists`` and ``os.path.isfile``: two ``stat`` calls per
record. With one writer, the file's size can simply be counted.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
from typing import Any, TextIO, cast

__all__ = ["RotatingFileSink"]


class RotatingFileSink(logging.handlers.RotatingFileHandler):
    """A ``RotatingFileHandler`` that counts what it writes instead of asking the file.

    Rotation happens when the next line would take the file past
    ``maxBytes`` (counted in characters, which is bytes for ASCII text).
    Only the hub's listener may write to it: another writer's lines would not
    be counted.
    """

    _size = 0

    def _open(self) -> Any:
        stream = cast(TextIO, super()._open())
        self._size = os.fstat(stream.fileno()).st_size
        return stream

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + self.terminator
            if self.maxBytes > 0 and self._size and self._size + len(line) > self.maxBytes:
                self.doRollover()
            stream = self.stream
            if stream is None:  # closed by a reopen that failed, or by close()
                stream = self.stream = self._open()
            stream.write(line)
            self._size += len(line)
            self.flush()
        except RecursionError:
            raise
        except Exception:  # noqa: BLE001 - the logging contract: report, never raise
            self.handleError(record)
