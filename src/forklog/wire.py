"""The record codec: how a ``LogRecord`` crosses the process boundary.

Both sides use this module. :func:`encode` runs in the emitting process (a
gunicorn worker, a pool child, or the master itself) and never raises;
:func:`decode` runs in the master's listener thread.

A record travels as self-contained plain data (DESIGN §1, H9, H10):

* the message already merged with its args, so nothing the application
  passed as an argument has to survive serialisation;
* the traceback and the stack as separate text fields, so a JSON sink can
  put them in their own keys (gh-89087: ``QueueHandler.prepare`` flattens
  them into ``msg``);
* ``extra`` fields kept when they are plain data, turned into ``repr()``
  text when they are not (a lock, a socket, a lambda).

The encoding is :mod:`marshal` of a tuple of plain values: several times
faster than pickling a ``LogRecord`` and, unlike pickle, it cannot name a
class or a function to call on the receiving side.
"""

from __future__ import annotations

import logging
import marshal
import os
import sys
from typing import Any, Dict, Optional, Tuple, cast

__all__ = [
    "FORMAT_VERSION",
    "STANDARD_ATTRS",
    "decode",
    "encode",
    "safe_repr",
]

FORMAT_VERSION = 1

#: Attributes every ``LogRecord`` has; anything else on a record came from
#: ``extra=`` (or a filter) and is carried as an extra field.
STANDARD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}

#: Nesting depth and item count kept for containers inside ``extra``.
_MAX_DEPTH = 4
_MAX_ITEMS = 1000

_SCALARS = (str, int, float, bool, type(None))
#: How many attributes a record has when nothing was added to it.
_PLAIN_RECORD_SIZE = len(logging.LogRecord("", 0, "", 0, "", (), None).__dict__)
_exception_formatter = logging.Formatter()


def safe_repr(value: object) -> str:
    """``repr(value)`` that never raises (a ``__repr__`` may raise or recurse)."""
    try:
        text = repr(value)
        if type(text) is str:
            return text
        return str.__str__(text)
    except BaseException:  # noqa: BLE001 - RecursionError, anything a __repr__ throws
        return f"<unrepresentable {type(value).__qualname__} object>"


def _safe_str(value: object) -> str:
    if type(value) is str:
        return value
    try:
        return str.__str__(str(value))
    except BaseException:  # noqa: BLE001
        return safe_repr(value)


def _plain(value: object, depth: int = 0) -> object:
    """Return ``value`` if marshal can carry it as plain data, else its repr."""
    kind = type(value)
    if kind in _SCALARS:
        return value
    if depth < _MAX_DEPTH:
        if kind is list or kind is tuple:
            items = value[:_MAX_ITEMS]  # type: ignore[index]
            return [_plain(item, depth + 1) for item in items]
        if kind is dict:
            out: Dict[str, object] = {}
            for index, (key, item) in enumerate(value.items()):  # type: ignore[attr-defined]
                if index >= _MAX_ITEMS:
                    break
                name = key if type(key) is str else safe_repr(key)
                out[name] = _plain(item, depth + 1)
            return out
    return safe_repr(value)


def merged_message(record: logging.LogRecord) -> str:
    """``record.getMessage()``, or a readable fallback when merging fails."""
    try:
        return _safe_str(record.getMessage())
    except BaseException as exc:  # noqa: BLE001 - a %-mismatch or a raising __str__
        return (
            f"{_safe_str(record.msg)} % {safe_repr(record.args)} "
            f"[forklog: could not merge args: {type(exc).__name__}: {_safe_str(exc)}]"
        )


def _exception_text(record: logging.LogRecord) -> Optional[str]:
    if record.exc_text:
        return _safe_str(record.exc_text)
    if record.exc_info:
        try:
            return _exception_formatter.formatException(record.exc_info)
        except BaseException as exc:  # noqa: BLE001
            return f"[forklog: could not format the traceback: {safe_repr(exc)}]"
    return None


def _extras(attrs: Dict[str, Any]) -> Optional[Dict[str, object]]:
    if len(attrs) <= _PLAIN_RECORD_SIZE:
        return None  # a record as LogRecord() made it: nothing extra to look for
    extras = None
    for key, value in attrs.items():
        if key not in STANDARD_ATTRS:
            if extras is None:
                extras = {}
            extras[key] = _plain(value)
    return extras


def encode(record: logging.LogRecord, max_bytes: int = 1 << 20) -> bytes:
    """Serialise ``record`` to bytes. Never raises.

    A payload over ``max_bytes`` has its message (then its traceback) cut,
    with a visible ``[forklog: truncated N characters]`` marker.
    """
    try:
        fields = _fields(record)
        payload = marshal.dumps(cast(Any, fields), 4)
    except BaseException as exc:  # noqa: BLE001 - last resort: deliver something
        fields = _fallback_fields(record, exc)
        payload = marshal.dumps(cast(Any, fields), 4)
    if len(payload) > max_bytes:
        payload = marshal.dumps(cast(Any, _truncated(fields, len(payload) - max_bytes)), 4)
    return payload


def _fields(record: logging.LogRecord) -> Tuple[object, ...]:
    attrs = record.__dict__
    name, levelname, pathname = record.name, record.levelname, record.pathname
    func, thread_name, process_name = record.funcName, record.threadName, record.processName
    return (
        FORMAT_VERSION,
        name if type(name) is str else _safe_str(name),
        int(record.levelno),
        levelname if type(levelname) is str else _safe_str(levelname),
        merged_message(record),
        float(record.created),
        float(record.msecs),
        float(record.relativeCreated),
        pathname if type(pathname) is str else _safe_str(pathname),
        int(record.lineno or 0),
        func if type(func) is str else _safe_str(func),
        record.thread,
        thread_name if type(thread_name) is str else _safe_str(thread_name),
        process_name if type(process_name) is str else _safe_str(process_name),
        _exception_text(record),
        _safe_str(record.stack_info) if record.stack_info else None,
        attrs.get("taskName"),
        _extras(attrs),
    )


def _fallback_fields(record: logging.LogRecord, exc: BaseException) -> Tuple[object, ...]:
    now = float(getattr(record, "created", 0.0) or 0.0)
    return (
        FORMAT_VERSION,
        "forklog",
        int(getattr(record, "levelno", logging.ERROR) or logging.ERROR),
        "ERROR",
        f"[forklog: could not encode a record: {safe_repr(exc)}] {safe_repr(getattr(record, 'msg', None))}",
        now,
        0.0,
        0.0,
        "",
        0,
        "",
        None,
        "",
        "",
        None,
        None,
        None,
        None,
    )


def _truncated(fields: Tuple[object, ...], excess: int) -> Tuple[object, ...]:
    items = list(fields)
    for index in (4, 14, 15):  # message, traceback, stack
        text = items[index]
        if excess <= 0 or not isinstance(text, str):
            continue
        cut = min(len(text), excess + 64)
        items[index] = text[: len(text) - cut] + f" [forklog: truncated {cut} characters]"
        excess -= cut
    if excess > 0:
        items[17] = {"forklog_truncated": f"extra fields dropped: {excess} bytes over the limit"}
    return tuple(items)


_new_record = logging.LogRecord.__new__
_HAS_TASK_NAME = sys.version_info >= (3, 12)
# pathname -> (filename, module): a handful of source files log almost everything.
_file_names: Dict[str, Tuple[str, str]] = {}


def decode(payload: bytes, pid: int) -> logging.LogRecord:
    """Rebuild a ``LogRecord`` from :func:`encode`'s bytes. Raises ``ValueError``."""
    try:
        fields = marshal.loads(payload)
    except (EOFError, TypeError, ValueError) as exc:
        raise ValueError(f"undecodable record payload: {exc}") from None
    if type(fields) is not tuple or len(fields) != 18 or fields[0] != FORMAT_VERSION:
        raise ValueError("record payload of an unknown shape")
    (
        _version,
        name,
        levelno,
        levelname,
        message,
        created,
        msecs,
        relative,
        pathname,
        lineno,
        func,
        thread,
        thread_name,
        process_name,
        exc_text,
        stack_info,
        task_name,
        extras,
    ) = fields
    names = _file_names.get(pathname)
    if names is None:
        if len(_file_names) > 4096:
            _file_names.clear()
        filename = os.path.basename(pathname)
        names = _file_names[pathname] = (filename, os.path.splitext(filename)[0])
    record = _new_record(logging.LogRecord)
    attrs = {
        "name": name,
        "msg": message,
        "args": None,
        "levelname": levelname,
        "levelno": levelno,
        "pathname": pathname,
        "filename": names[0],
        "module": names[1],
        "exc_info": None,
        "exc_text": exc_text,
        "stack_info": stack_info,
        "lineno": lineno,
        "funcName": func,
        "created": created,
        "msecs": msecs,
        "relativeCreated": relative,
        "thread": thread,
        "threadName": thread_name,
        "processName": process_name,
        "process": pid,
    }
    if _HAS_TASK_NAME:
        attrs["taskName"] = task_name
    if extras:
        for key, value in extras.items():
            attrs.setdefault(key, value)
    record.__dict__ = attrs
    return record
