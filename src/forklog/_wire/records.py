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

The encoding is :mod:`marshal` of a tuple of plain values: several times
faster than pickling a ``LogRecord`` and, unlike pickle, it cannot name a
class or a function to call on the receiving side.
"""

from __future__ import annotations

import logging
import marshal
import os
import sys
from typing import Any, Callable, Dict, List, Optional, Tuple, cast

from forklog._wire import tracebacks
from forklog._wire.text import cut_text, merged_message, plain, safe_repr, safe_str

__all__ = [
    "EXC_MESSAGE_ATTR",
    "EXC_TYPE_ATTR",
    "FORMAT_VERSION",
    "STANDARD_ATTRS",
    "Exc",
    "Field",
    "decode",
    "decode_fields",
    "encode",
    "exception_text",
    "extra_fields",
    "fields_of",
    "file_names",
    "plain_fields",
    "record_from_fields",
    "rendered",
]

#: 3: the traceback field of a record with ``exc_info`` is a tuple
#: ``(traceback, type name, message)``, or ``(None, type name, message,
#: frames)`` for the master to write the traceback (:mod:`forklog._wire.tracebacks`);
#: 2 had no frames; 1 carried the traceback text only.
FORMAT_VERSION = 3


class Field:
    """Where each attribute is in the tuple of fields a record travels as (:func:`encode`).

    The order is the wire format's (``FORMAT_VERSION``); every reader of a
    field names it here, never by its number.
    """

    VERSION = 0
    NAME = 1
    LEVELNO = 2
    LEVELNAME = 3
    #: The message, merged with its arguments.
    MSG = 4
    CREATED = 5
    MSECS = 6
    RELATIVE_CREATED = 7
    PATHNAME = 8
    LINENO = 9
    FUNC_NAME = 10
    THREAD = 11
    THREAD_NAME = 12
    PROCESS_NAME = 13
    #: None, the exception's text, or (type, message, ..., its frames).
    EXCEPTION = 14
    STACK_INFO = 15
    TASK_NAME = 16
    #: The extras and bound context fields: a dict, or None.
    EXTRAS = 17
    #: How many fields there are.
    COUNT = 18


class Exc:
    """Where each part is in the exception field of a record that had ``exc_info``.

    The field is ``(text, type name, message)``, or ``(None, type name,
    message, frames)`` when the master writes the traceback from the frames
    (:mod:`forklog._wire.tracebacks`).
    """

    TEXT = 0
    TYPE = 1
    MESSAGE = 2
    FRAMES = 3
    #: The length of the field when it carries the frames.
    WITH_FRAMES = 4


#: Set by :func:`decode` on a record whose exception was known in the
#: emitting process: its qualified type name (``ValueError``,
#: ``json.decoder.JSONDecodeError``) and its ``str()``.
EXC_TYPE_ATTR = "forklog_exc_type"
EXC_MESSAGE_ATTR = "forklog_exc_message"

#: Attributes every ``LogRecord`` has (and the two above); anything else on
#: a record came from ``extra=`` (or a filter) and is carried as an extra field.
STANDARD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
    EXC_TYPE_ATTR,
    EXC_MESSAGE_ATTR,
}


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

    The frames, not the text, when the exception's chain is plain frames and
    messages: formatting is the dearest part of a log call, so the master
    does it (:mod:`forklog._wire.tracebacks`).
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
        payload = marshal.dumps(cast(Any, fields), 4)
    except Exception as exc:  # noqa: BLE001 - the slow path of a strange record
        fields = _careful_fields(record, exc)
        payload = marshal.dumps(cast(Any, fields), 4)
    if len(payload) > max_bytes:
        payload = _truncated(fields, len(payload), max_bytes)
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


def _careful_fields(record: logging.LogRecord, exc: Exception) -> Tuple[object, ...]:
    """The fields one by one, each one that fails replaced by a default.

    Reached when the fast path raised: an ``extra=`` that shadows a field
    (``taskName`` on Python < 3.12, say) with something marshal cannot
    carry, a level or a time that is not a number. The record keeps
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
        _field(record, "levelno", int, logging.ERROR),
        _field(record, "levelname", safe_str, "ERROR"),
        merged_message(record),
        _field(record, "created", float, 0.0),
        _field(record, "msecs", float, 0.0),
        _field(record, "relativeCreated", float, 0.0),
        _field(record, "pathname", safe_str, ""),
        _field(record, "lineno", lambda value: int(value or 0), 0),
        _field(record, "funcName", safe_str, ""),
        _field(record, "thread", lambda value: None if value is None else int(value), None),
        _field(record, "threadName", safe_str, ""),
        _field(record, "processName", safe_str, ""),
        _exception(record),
        _field(record, "stack_info", lambda value: safe_str(value) if value else None, None),
        _field(record, "taskName", _optional_text, None),
        extras,
    )
    try:
        marshal.dumps(cast(Any, fields), 4)
    except Exception as error:  # noqa: BLE001 - last resort: deliver the message at least
        extras = {"forklog_encode_error": f"{type(error).__name__}: {safe_str(error)}"}
        fields = cast(Any, (*fields[: Field.EXTRAS], extras))
    return fields


def _common_length(lengths: List[int], excess: int) -> int:
    """The largest length that texts of ``lengths`` bytes, cut to it, lose ``excess`` bytes."""
    ordered = sorted(lengths, reverse=True)
    total = 0
    for count, length in enumerate(ordered, 1):
        total += length
        shorter = ordered[count] if count < len(ordered) else 0
        if total - count * shorter >= excess:  # cutting the longest `count` to `shorter` is enough
            return max(0, (total - excess) // count)
    return 0


def _truncated(fields: Tuple[object, ...], size: int, max_bytes: int) -> bytes:
    """The payload of ``fields`` (``size`` bytes as they are) cut to at most ``max_bytes``."""
    items = list(fields)
    exception = items[Field.EXCEPTION]
    if type(exception) is tuple and len(exception) == Exc.WITH_FRAMES:
        # Too big as frames (a deep recursion and a huge message): cut as text.
        exception = (rendered(exception[Exc.FRAMES]), exception[Exc.TYPE], exception[Exc.MESSAGE])
    parts = list(exception) if type(exception) is tuple else [exception]

    def dumps() -> bytes:
        items[Field.EXCEPTION] = tuple(parts) if type(exception) is tuple else parts[Exc.TEXT]
        return marshal.dumps(cast(Any, tuple(items)), 4)

    # The message, the traceback, the stack and the exception's message are
    # cut to one common length, just short enough: the longest lose the most,
    # and a short message is not cut away for a traceback of megabytes.
    texts = [
        (place, index, len(cast(str, place[index]).encode("utf-8", "surrogatepass")))
        for place, index in (
            (items, Field.MSG),
            (parts, Exc.TEXT),
            (items, Field.STACK_INFO),
            (parts, Exc.MESSAGE),
        )
        if index < len(place) and isinstance(place[index], str)
    ]
    cap = _common_length([length for _place, _index, length in texts], size - max_bytes)
    for place, index, length in texts:
        if length > cap:
            place[index] = cut_text(cast(str, place[index]), length - cap)
    payload = dumps()
    size = len(payload)
    if size <= max_bytes:
        return payload
    items[Field.EXTRAS] = {
        "forklog_truncated": f"extra fields dropped: {size - max_bytes} bytes over the limit"
    }
    payload = dumps()
    if len(payload) <= max_bytes:
        return payload
    # Still too big: a logger name or a path of megabytes. Every text gets a share.
    share = max_bytes // 32
    for place in (items, parts):
        for index, value in enumerate(place):
            if isinstance(value, str) and len(value.encode("utf-8", "surrogatepass")) > share:
                place[index] = cut_text(value, len(value.encode("utf-8", "surrogatepass")) - share)
    return dumps()


def rendered(chain: object) -> str:
    try:
        return tracebacks.render(cast(tracebacks.Chain, chain))
    except Exception as exc:  # noqa: BLE001 - frames from the pipe, not trusted to be well formed
        return f"[forklog: could not write the traceback: {safe_repr(exc)}]"


_new_record = logging.LogRecord.__new__
_HAS_TASK_NAME = sys.version_info >= (3, 12)
# pathname -> (filename, module): a handful of source files log almost everything.
_file_names: Dict[str, Tuple[str, str]] = {}


def decode(payload: bytes, pid: int) -> logging.LogRecord:
    """Rebuild a ``LogRecord`` from :func:`encode`'s bytes. Raises ``ValueError``."""
    return record_from_fields(decode_fields(payload), pid)


def decode_fields(payload: bytes) -> Tuple[Any, ...]:
    """The 18 fields of :func:`encode`'s bytes, as a tuple, checked for shape only. Raises ``ValueError``.

    The listener's fast lane renders a line straight from them
    (:func:`plain_fields` says when it may); :func:`record_from_fields`
    makes the ``LogRecord``.
    """
    try:
        fields = marshal.loads(payload)
    except (EOFError, TypeError, ValueError) as exc:
        raise ValueError(f"undecodable record payload: {exc}") from None
    if type(fields) is not tuple or len(fields) != Field.COUNT or fields[Field.VERSION] != FORMAT_VERSION:
        raise ValueError("record payload of an unknown shape")
    return fields


def plain_fields(fields: Tuple[Any, ...]) -> bool:
    """Whether ``fields`` hold the types :func:`encode` writes where a line is made from them.

    True guarantees that :func:`record_from_fields` does not raise, and that
    the record's ``getMessage()`` is ``fields[Field.MSG]`` itself. Anything else (a
    payload that did not come from :func:`encode`) takes the slow path.
    """
    exception, extras = fields[Field.EXCEPTION], fields[Field.EXTRAS]
    return (
        type(fields[Field.MSG]) is str
        and type(fields[Field.NAME]) is str
        and type(fields[Field.LEVELNO]) is int
        and type(fields[Field.PATHNAME]) is str
        and type(fields[Field.CREATED]) is float
        and (extras is None or type(extras) is dict)
        and (
            exception is None or type(exception) is str or (type(exception) is tuple and len(exception) >= 3)
        )
    )


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
