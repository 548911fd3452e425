"""The record codec: how a ``LogRecord`` crosses the process boundary.

Both sides use this module. :func:`encode` runs in the emitting process (a
gunicorn worker, a pool child, or the master itself) and never raises an
``Exception``, whatever the record holds (``KeyboardInterrupt`` and
``SystemExit`` raised by a signal handler during the call pass through, as
they do through ``logging``); :func:`decode` runs in the master's listener
thread.

A record travels as self-contained plain data (DESIGN §1, H9, H10):

* the message already merged with its args, so nothing the application
  passed as an argument has to survive serialisation;
* the traceback and the stack as separate text fields, so a JSON sink can
  put them in their own keys (gh-89087: ``QueueHandler.prepare`` flattens
  them into ``msg``); for a record with ``exc_info``, the exception's
  qualified type name and its ``str()`` as well, which the master cannot
  read back from the traceback text (an OTLP sink sends them as
  ``exception.type`` and ``exception.message``);
* ``extra`` fields kept when they are plain data, turned into ``repr()``
  text when they are not (a lock, a socket, a lambda).

The encoding is a fixed layout of plain values (:mod:`forklog._wire.packing`):
faster than pickling a ``LogRecord`` and, unlike pickle, it cannot name a
class or a function to call on the receiving side; unlike ``marshal``, the
master reads it in time and memory bounded by its length.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, Callable, Dict, Optional, Tuple, cast

from forklog._wire import tracebacks
from forklog._wire.fields import (
    EXC_MESSAGE_ATTR,
    EXC_TYPE_ATTR,
    FORMAT_VERSION,
    STANDARD_ATTRS,
    Exc,
    Field,
)
from forklog._wire.packing import pack, pack_fields, unpack_fields
from forklog._wire.text import merged_message, plain, safe_repr, safe_str
from forklog._wire.tracebacks import rendered
from forklog._wire.truncation import truncated

__all__ = [
    "decode",
    "decode_fields",
    "encode",
    "exception_text",
    "extra_fields",
    "fields_of",
    "file_names",
    "record_from_fields",
]


#: How many attributes a record has when nothing was added to it.
_PLAIN_RECORD_SIZE = len(logging.LogRecord("", 0, "", 0, "", (), None).__dict__)
_exception_formatter = logging.Formatter()


def _exception_text(record: logging.LogRecord) -> Optional[str]:
    if record.exc_text:
        return safe_str(record.exc_text)
    if record.exc_info:
        try:
            return _exception_formatter.formatException(record.exc_info)
        except Exception as exc:  # noqa: BLE001
            return f"[forklog: could not format the traceback: {safe_repr(exc)}]"
    return None


def _exception(record: logging.LogRecord) -> object:
    """The traceback field: None, the text, or ``(text, type name, message[, frames])`` given ``exc_info``.

    The frames, each with its source line, not the text, when the
    exception's chain is plain frames and messages: formatting is the
    dearest part of a log call, so the master does it
    (:mod:`forklog._wire.tracebacks`), from what the frames carry only.
    """
    exc_info = record.exc_info
    if not exc_info:
        return safe_str(record.exc_text) if record.exc_text else None
    try:
        kind, value, tb = exc_info
        if kind is None:
            return _exception_text(record)  # logging.exception() outside an except block
        name, message = safe_str(tracebacks.type_name(kind)), safe_str(value)
        if not record.exc_text and isinstance(value, BaseException) and value.__traceback__ is tb:
            chain = tracebacks.extract(value)
            if chain is not None:
                return (None, name, message, chain)
        return (_exception_text(record), name, message)
    except Exception:  # noqa: BLE001 - exc_info=True outside an except block, a hand-made tuple
        return _exception_text(record)


def extra_fields(attrs: Dict[str, Any]) -> Optional[Dict[str, object]]:
    if len(attrs) <= _PLAIN_RECORD_SIZE:
        return None  # a record as LogRecord() made it: nothing extra to look for
    extras = None
    for key, value in attrs.items():
        if key not in STANDARD_ATTRS:
            if extras is None:
                extras = {}
            # extra={1: ...} is accepted by logging: a key travels as text, like any name.
            extras[key if type(key) is str else safe_repr(key)] = plain(value)
    return extras


def encode(record: logging.LogRecord, max_bytes: int = 1 << 20) -> bytes:
    """Serialise ``record`` to bytes. Never raises an ``Exception``.

    A payload over ``max_bytes`` has its longest texts (of the message, the
    traceback, the stack and the exception's message) cut to one length,
    each with a visible ``[forklog: truncated N characters]`` marker, so
    that it fits. A record whose fields cannot all be read or carried is
    sent with the ones that can, and says what failed.
    """
    try:
        fields = fields_of(record)
        payload = pack(*fields)
    except Exception as exc:  # noqa: BLE001 - the slow path of a strange record
        fields = _careful_fields(record, exc)
        payload = pack_fields(fields)
    if len(payload) > max_bytes:
        payload = truncated(fields, len(payload), max_bytes)
    return payload


def fields_of(record: logging.LogRecord) -> Tuple[object, ...]:
    attrs = record.__dict__
    name, levelname, pathname = record.name, record.levelname, record.pathname
    func, thread_name, process_name = record.funcName, record.threadName, record.processName
    return (
        FORMAT_VERSION,
        name if type(name) is str else safe_str(name),
        int(record.levelno),
        levelname if type(levelname) is str else safe_str(levelname),
        merged_message(record),
        float(record.created),
        float(record.msecs),
        float(record.relativeCreated),
        pathname if type(pathname) is str else safe_str(pathname),
        int(record.lineno or 0),
        func if type(func) is str else safe_str(func),
        record.thread,
        thread_name if type(thread_name) is str else safe_str(thread_name),
        process_name if type(process_name) is str else safe_str(process_name),
        _exception(record),
        safe_str(record.stack_info) if record.stack_info else None,
        attrs.get("taskName"),
        extra_fields(attrs),
    )


def _field(record: logging.LogRecord, name: str, convert: Callable[[Any], object], default: object) -> object:
    try:
        return convert(getattr(record, name))
    except Exception:  # noqa: BLE001
        return default


def _optional_text(value: object) -> Optional[str]:
    return None if value is None else safe_str(value)


def _bounded_int(bits: int, unsigned: bool = False) -> Callable[[Any], int]:
    """``int(value)``, raising ``ValueError`` unless it fits the field's ``bits``."""
    low, high = (0, 1 << bits) if unsigned else (-(1 << (bits - 1)), 1 << (bits - 1))

    def convert(value: Any) -> int:
        number = int(value or 0)
        if not low <= number < high:
            raise ValueError(f"{number} does not fit in {bits} bits")
        return number

    return convert


_levelno, _lineno, _thread = _bounded_int(32), _bounded_int(64), _bounded_int(64, unsigned=True)


def _careful_fields(record: logging.LogRecord, exc: Exception) -> Tuple[object, ...]:
    """The fields one by one, each one that fails replaced by a default.

    Reached when the fast path raised: an ``extra=`` that shadows a field
    (``taskName`` on Python < 3.12, say) with something the wire cannot
    carry, a level or a time that is not a number, a number too large. The record keeps
    everything else, and says what went wrong in ``forklog_encode_error``.
    """
    try:
        extras = extra_fields(record.__dict__) or {}
    except Exception as error:  # noqa: BLE001 - a record.__dict__ changed while being read
        extras = {"forklog_extras_error": f"{type(error).__name__}: {safe_str(error)}"}
    extras["forklog_encode_error"] = f"{type(exc).__name__}: {safe_str(exc)}"
    fields = (
        FORMAT_VERSION,
        _field(record, "name", safe_str, "forklog"),
        _field(record, "levelno", _levelno, logging.ERROR),
        _field(record, "levelname", safe_str, "ERROR"),
        merged_message(record),
        _field(record, "created", float, 0.0),
        _field(record, "msecs", float, 0.0),
        _field(record, "relativeCreated", float, 0.0),
        _field(record, "pathname", safe_str, ""),
        _field(record, "lineno", _lineno, 0),
        _field(record, "funcName", safe_str, ""),
        _field(record, "thread", lambda value: None if value is None else _thread(value), None),
        _field(record, "threadName", safe_str, ""),
        _field(record, "processName", safe_str, ""),
        _exception(record),
        _field(record, "stack_info", lambda value: safe_str(value) if value else None, None),
        _field(record, "taskName", _optional_text, None),
        extras,
    )
    try:
        pack_fields(fields)
    except Exception as error:  # noqa: BLE001 - last resort: deliver the message at least
        extras = {"forklog_encode_error": f"{type(error).__name__}: {safe_str(error)}"}
        fields = cast(Any, (*fields[: Field.EXTRAS], extras))
    return fields


_new_record = logging.LogRecord.__new__
_HAS_TASK_NAME = sys.version_info >= (3, 12)
# pathname -> (filename, module): a handful of source files log almost everything.
_file_names: Dict[str, Tuple[str, str]] = {}


def decode(payload: bytes, pid: int) -> logging.LogRecord:
    """Rebuild a ``LogRecord`` from :func:`encode`'s bytes. Raises ``ValueError``."""
    return record_from_fields(decode_fields(payload), pid)


#: The 18 fields of :func:`encode`'s bytes, as a tuple, checked for shape
#: (:func:`forklog._wire.packing.unpack_fields`). Raises ``ValueError``.
#: The listener's fast lane renders a line straight from them;
#: :func:`record_from_fields` makes the ``LogRecord``.
decode_fields = unpack_fields


def file_names(pathname: str) -> Tuple[str, str]:
    """``(filename, module)`` of ``pathname``, as ``LogRecord`` has them."""
    names = _file_names.get(pathname)
    if names is None:
        if len(_file_names) > 4096:
            _file_names.clear()
        filename = os.path.basename(pathname)
        names = _file_names[pathname] = (filename, os.path.splitext(filename)[0])
    return names


def exception_text(exception: Any) -> Any:
    """The record's ``exc_text`` given the traceback field (see :func:`_exception`)."""
    if type(exception) is tuple:
        if len(exception) == Exc.WITH_FRAMES:
            return rendered(exception[Exc.FRAMES])
        return exception[Exc.TEXT]
    return exception


def record_from_fields(fields: Tuple[Any, ...], pid: int) -> logging.LogRecord:
    """The ``LogRecord`` of :func:`decode_fields`' tuple. Raises on fields of the wrong types."""
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
        exception,
        stack_info,
        task_name,
        extras,
    ) = fields
    filename, module = file_names(pathname)
    record = _new_record(logging.LogRecord)
    attrs = {
        "name": name,
        "msg": message,
        "args": None,
        "levelname": levelname,
        "levelno": levelno,
        "pathname": pathname,
        "filename": filename,
        "module": module,
        "exc_info": None,
        "exc_text": exception,
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
    if type(exception) is tuple:  # (traceback, type name, message[, frames]): it had exc_info
        attrs["exc_text"] = exception_text(exception)
        attrs[EXC_TYPE_ATTR] = exception[Exc.TYPE]
        attrs[EXC_MESSAGE_ATTR] = exception[Exc.MESSAGE]
    if extras:
        for key, value in extras.items():
            attrs.setdefault(key, value)
    record.__dict__ = attrs
    return record
