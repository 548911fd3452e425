"""Formatters for the master's sinks."""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from typing import Any, Dict, Iterable, Tuple

from forklog._wire import STANDARD_ATTRS, merged_message, safe_repr
from forklog._wire.controls import ESCAPES, escape_lines

__all__ = ["JSONFormatter", "TextFormatter"]

_RESERVED = frozenset({"time", "level", "logger", "message", "pid", "thread", "exc_info", "stack_info"})


class JSONFormatter(logging.Formatter):
    """One JSON object per line.

    Keys: ``time`` (RFC 3339, UTC, milliseconds), ``level``, ``logger``,
    ``message``, ``pid``, ``thread``; ``exc_info`` and ``stack_info`` (text)
    when present; ``extra`` fields at the top level (an extra whose name
    clashes with one of these keys is written as ``extra.<name>``). All
    control characters are escaped, so a message cannot forge a line.
    Whatever a record carries, the line is valid JSON: a NaN or an infinity
    is written as a string (``"nan"``, ``"inf"``), a key that is not a
    string as its repr, anything else JSON has no type for as its repr.
    """

    _time_cache: Tuple[int, str] = (-1, "")

    def format(self, record: logging.LogRecord) -> str:
        exc_text = record.exc_text
        if not exc_text and record.exc_info:
            exc_text = self.formatException(record.exc_info)
        extras = ((key, value) for key, value in record.__dict__.items() if key not in STANDARD_ATTRS)
        return self._line(
            record.created,
            record.msecs,
            record.levelname,
            record.name,
            merged_message(record),
            record.process,
            record.threadName,
            exc_text,
            record.stack_info,
            extras,
        )

    def _line(  # noqa: PLR0917 - one argument per key, for format() and the fast lane
        self,
        created: float,
        msecs: float,
        levelname: object,
        name: object,
        message: str,
        pid: object,
        thread_name: object,
        exc_text: object,
        stack_info: object,
        extras: Iterable[Tuple[Any, Any]],
    ) -> str:
        if 0 <= created < 1e11:  # gmtime() floors; int() truncates: the same for these
            second, stamp = self._time_cache
            if int(created) != second:
                stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
                self._time_cache = (int(created), stamp)
        else:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
        out: Dict[Any, Any] = {
            "time": f"{stamp}.{int(msecs):03d}Z",
            "level": levelname,
            "logger": name,
            "message": message,
            "pid": pid,
            "thread": thread_name,
        }
        if exc_text:
            out["exc_info"] = exc_text
        if stack_info:
            out["stack_info"] = stack_info
        for key, value in extras:
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
    """A ``logging.Formatter`` that can escape control characters.

    With ``escape_newlines=True`` (forklog's console) every C0 control
    character but TAB, and DEL, in every field is written escaped (``\\r``,
    ``\\n``, ``\\x1b``...), so a user-controlled string can neither start
    a line that looks like another record nor drive the terminal. A
    traceback or a stack keeps the line breaks between its own lines, each
    line escaped. The format string itself is written as it is.
    """

    def __init__(self, fmt: str, datefmt: str | None = None, *, escape_newlines: bool = False) -> None:
        super().__init__(fmt, datefmt)
        self.escape_newlines = escape_newlines
        if escape_newlines:
            # Only an escaping formatter pays for its format(): the others keep the stdlib's.
            self.format = self._format_escaped  # type: ignore[method-assign]
        self._stamp = (-1, "")  # (second, text): one attribute, so threads never see half of it

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        # strftime is the dearest part of a text line; records come in bursts
        # within one second, so the stamp is made once per second.
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        second, stamp = self._stamp
        if int(record.created) != second:
            stamp = time.strftime(self.default_time_format, self.converter(record.created))
            self._stamp = (int(record.created), stamp)
        return f"{stamp},{int(record.msecs):03d}"

    def _format_escaped(self, record: logging.LogRecord) -> str:
        # logging.Formatter.format, with the traceback and the stack escaped
        # line by line (record.exc_text, which other handlers read, stays as it is).
        record.message = record.getMessage()
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        s = self.formatMessage(record)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            if s[-1:] != "\n":
                s = s + "\n"
            s = s + escape_lines(record.exc_text)
        if record.stack_info:
            if s[-1:] != "\n":
                s = s + "\n"
            s = s + escape_lines(self.formatStack(record.stack_info))
        return s

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        if not self.escape_newlines or line.isprintable():
            return line
        # A field has a control character (or the format has one): every text field escaped.
        escaped = copy.copy(record)
        escaped.__dict__.update(
            (key, value.translate(ESCAPES)) for key, value in record.__dict__.items() if type(value) is str
        )
        return super().formatMessage(escaped)


# -- the listener's fast lane ---------------------------------------------------------
