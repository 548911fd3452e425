"""Formatters for the master's sinks."""

from __future__ import annotations

import json
import logging
import math
import time
from typing import Any, Dict

from forklog.wire import STANDARD_ATTRS, merged_message, safe_repr

__all__ = ["JSONFormatter", "TextFormatter"]

_RESERVED = frozenset({"time", "level", "logger", "message", "pid", "thread", "exc_info", "stack_info"})


class JSONFormatter(logging.Formatter):
    """One JSON object per line (DESIGN §2).

    Keys: ``time`` (RFC 3339, UTC, milliseconds), ``level``, ``logger``,
    ``message``, ``pid``, ``thread``; ``exc_info`` and ``stack_info`` (text)
    when present; ``extra`` fields at the top level (an extra whose name
    clashes with one of these keys is written as ``extra.<name>``). All
    control characters are escaped, so a message cannot forge a line (H15).
    Whatever a record carries, the line is valid JSON: a NaN or an infinity
    is written as a string (``"nan"``, ``"inf"``), a key that is not a
    string as its repr, anything else JSON has no type for as its repr.
    """

    def format(self, record: logging.LogRecord) -> str:
        created = record.created
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
        out: Dict[str, Any] = {
            "time": f"{stamp}.{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": merged_message(record),
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
        try:
            return json.dumps(out, default=safe_repr, allow_nan=False)
        except (TypeError, ValueError, RecursionError):
            # NaN, a tuple as a key, a container that contains itself: the slow path.
            return json.dumps(_jsonable(out, 0), default=safe_repr, allow_nan=False)


#: How deep _jsonable follows containers before writing the rest as a repr.
_MAX_DEPTH = 16


def _jsonable(value: object, depth: int) -> object:
    """``value`` as plain JSON data: finite numbers, string keys, no cycles."""
    kind = type(value)
    if kind is float:
        number: float = value  # type: ignore[assignment]
        return value if math.isfinite(number) else repr(number)
    if kind in (str, int, bool) or value is None:
        return value
    if depth < _MAX_DEPTH:
        if isinstance(value, dict):
            return {
                key if type(key) is str else safe_repr(key): _jsonable(item, depth + 1)
                for key, item in value.items()
            }
        if isinstance(value, (list, tuple)):
            return [_jsonable(item, depth + 1) for item in value]
    return safe_repr(value)


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
