"""Formatters for the master's sinks."""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Dict

from forklog.wire import STANDARD_ATTRS

__all__ = ["JSONFormatter", "TextFormatter"]

_RESERVED = frozenset({"time", "level", "logger", "message", "pid", "thread", "exc_info", "stack_info"})


class JSONFormatter(logging.Formatter):
    """One JSON object per line (DESIGN §2).

    Keys: ``time`` (RFC 3339, UTC, milliseconds), ``level``, ``logger``,
    ``message``, ``pid``, ``thread``; ``exc_info`` and ``stack_info`` (text)
    when present; ``extra`` fields at the top level (an extra whose name
    clashes with one of these keys is written as ``extra.<name>``). All
    control characters are escaped, so a message cannot forge a line (H15).
    """

    def format(self, record: logging.LogRecord) -> str:
        created = record.created
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
        out: Dict[str, Any] = {
            "time": f"{stamp}.{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
            "thread": record.threadName,
        }
        exc_text = record.exc_text
        if not exc_text and record.exc_info:
            exc_text = self.formatException(record.exc_info)
        if exc_text:
            out["exc_info"] = exc_text
        if record.stack_info:
            out["stack_info"] = record.stack_info
        for key, value in record.__dict__.items():
            if key not in STANDARD_ATTRS:
                out[f"extra.{key}" if key in _RESERVED else key] = value
        return json.dumps(out, default=repr)


class TextFormatter(logging.Formatter):
    """A ``logging.Formatter`` that can escape CR and LF inside messages (H15).

    With ``escape_newlines=True`` a message (not its traceback) has ``\\r``
    and ``\\n`` written as ``\\\\r`` and ``\\\\n``, so a user-controlled
    string cannot start a line that looks like another record.
    """

    def __init__(self, fmt: str, datefmt: str | None = None, *, escape_newlines: bool = False) -> None:
        super().__init__(fmt, datefmt)
        self.escape_newlines = escape_newlines
        self._second = -1
        self._stamp = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        # strftime is the dearest part of a text line; records come in bursts
        # within one second, so the stamp is made once per second.
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        if second != self._second:
            self._stamp = time.strftime(self.default_time_format, self.converter(record.created))
            self._second = second
        return f"{self._stamp},{int(record.msecs):03d}"

    def formatMessage(self, record: logging.LogRecord) -> str:
        if self.escape_newlines:
            message = record.message
            if "\n" in message or "\r" in message:
                record.message = message.replace("\r", "\\r").replace("\n", "\\n")
                try:
                    return super().formatMessage(record)
                finally:
                    record.message = message
        return super().formatMessage(record)
