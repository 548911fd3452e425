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

import itertools
import logging
import marshal
import os
import struct
import sys
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, cast

from forklog import tracebacks

__all__ = [
    "Field",
    "EXC_MESSAGE_ATTR",
    "EXC_TYPE_ATTR",
    "FORMAT_VERSION",
    "STANDARD_ATTRS",
    "cut_text",
    "decode",
    "decode_fields",
    "encode",
    "exception_text",
    "LINES",
    "decode_lines",
    "encode_lines",
    "extra_fields",
    "file_names",
    "lines_fields",
    "lines_record",
    "plain_fields",
    "record_from_fields",
    "safe_repr",
    "safe_str",
]

#: 3: the traceback field of a record with ``exc_info`` is a tuple
#: ``(traceback, type name, message)``, or ``(None, type name, message,
#: frames)`` for the master to write the traceback (:mod:`forklog.tracebacks`);
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

#: Nesting depth and item count kept for containers inside ``extra``.
_MAX_DEPTH = 4
_MAX_ITEMS = 1000

_SCALARS = (str, int, float, bool, type(None))
#: How many attributes a record has when nothing was added to it.
_PLAIN_RECORD_SIZE = len(logging.LogRecord("", 0, "", 0, "", (), None).__dict__)
_exception_formatter = logging.Formatter()


def safe_repr(value: object) -> str:
    """``repr(value)`` that never raises an ``Exception`` (a ``__repr__`` may raise or recurse).

    ``KeyboardInterrupt`` and ``SystemExit`` are not swallowed: raised by a
    signal handler (gunicorn's SIGQUIT and SIGINT handlers call
    ``sys.exit``) while a log call happens to be running, they are the
    program's, not the record's, as with ``logging`` itself.
    """
    try:
        text = repr(value)
        if type(text) is str:
            return text
        return str.__str__(text)
    except Exception:  # noqa: BLE001 - RecursionError, anything a __repr__ throws
        return f"<unrepresentable {type(value).__qualname__} object>"


def safe_str(value: object) -> str:
    if type(value) is str:
        return value
    try:
        return str.__str__(str(value))
    except Exception:  # noqa: BLE001
        return safe_repr(value)


def _args_repr(args: object) -> str:
    """The args as ``logging`` would show them, each one's repr on its own (one may raise)."""
    if type(args) is tuple:
        items = [safe_repr(item) for item in args[:_MAX_ITEMS]]
        if len(args) > _MAX_ITEMS:
            items.append("...")
        return f"({items[0]},)" if len(items) == 1 else f"({', '.join(items)})"
    if type(args) is dict:
        head = itertools.islice(args.items(), _MAX_ITEMS)
        pairs = [f"{safe_repr(key)}: {safe_repr(item)}" for key, item in head]
        if len(args) > _MAX_ITEMS:
            pairs.append("...")
        return f"{{{', '.join(pairs)}}}"
    return safe_repr(args)


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
        return safe_str(record.getMessage())
    except Exception as exc:  # noqa: BLE001 - a %-mismatch or a raising __str__
        try:
            args = _args_repr(record.args)
        except Exception:  # noqa: BLE001 - a dict whose items() raises, a tuple mutated meanwhile
            args = safe_repr(record.args)
        return (
            f"{safe_str(record.msg)} % {args} "
            f"[forklog: could not merge args: {type(exc).__name__}: {safe_str(exc)}]"
        )


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
    does it (:mod:`forklog.tracebacks`).
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
            extras[key if type(key) is str else safe_repr(key)] = _plain(value)
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
        fields = _fields(record)
        payload = marshal.dumps(cast(Any, fields), 4)
    except Exception as exc:  # noqa: BLE001 - the slow path of a strange record
        fields = _careful_fields(record, exc)
        payload = marshal.dumps(cast(Any, fields), 4)
    if len(payload) > max_bytes:
        payload = _truncated(fields, len(payload), max_bytes)
    return payload


#: The first byte of a payload of lines made in the emitting process
#: (:func:`encode_lines`); a marshal payload never starts with it.
LINES = 0


def encode_lines(
    record: logging.LogRecord,
    renderers: Sequence[Callable[[logging.LogRecord, int, str], str]],
    pid: int,
    with_traceback: bool = False,
    with_fields: bool = False,
) -> Optional[bytes]:
    """The lines the master's sinks would write for ``record``, made here; None if they cannot be.

    When every sink of a hub is a file or a stream whose formatter the
    listener can reproduce, the emitting process makes the lines itself
    (:func:`forklog.formatters.record_renderer`, one per distinct
    formatter) and the master only writes them. A record with an exception
    sends its chain of frames too, when ``with_traceback`` (every formatter
    puts the traceback after the line): the master writes the traceback's
    text after each line (:mod:`forklog.tracebacks`). Anything else, a stack,
    a record whose fields :func:`encode` would have to mend, text that is
    not valid UTF-8, takes the fields path: None.

    ``with_fields`` adds the fields :func:`encode` would send, for sinks that
    need a ``LogRecord`` (syslog, OTLP) beside the files: see :func:`lines_fields`.

    The payload: ``LINES``, the number of lines, the level, the time, the
    length of the logger's name (for a sink that cannot take the lines, see
    :func:`lines_record`), the lengths of the chain and of the fields, the
    name, the byte length of each line but the last, the lines (UTF-8,
    without terminators), the chain (marshal), then the fields (marshal).
    """
    try:
        chain = _chain(record, with_traceback)
        levelno, created, name = record.levelno, record.created, record.name
        if chain is None or type(levelno) is not int or type(created) is not float or type(name) is not str:
            return None
        # record.getMessage(), inline for a str; a %-mismatch raises, and encode() reports it.
        msg, args = record.msg, record.args
        message = (msg % args if args else msg) if type(msg) is str else merged_message(record)
        name_bytes = _NAME_BYTES.get(name)
        if name_bytes is None:
            if len(_NAME_BYTES) > 4096:
                _NAME_BYTES.clear()
            name_bytes = _NAME_BYTES[name] = name.encode("utf-8")
        fields = marshal.dumps(cast(Any, _fields(record)), 4) if with_fields else b""
        count = len(renderers)
        head = _LINES_HEAD.pack(LINES, count, levelno, created, len(name_bytes), len(chain), len(fields))
        if count == 1:  # the common case: one formatter
            return head + name_bytes + renderers[0](record, pid, message).encode("utf-8") + chain + fields
        lines = [render(record, pid, message).encode("utf-8") for render in renderers]
        sizes = struct.pack(f"<{count - 1}I", *[len(line) for line in lines[:-1]])
        return head + name_bytes + sizes + b"".join(lines) + chain + fields
    except Exception:  # noqa: BLE001 - encode() makes do with what the record has
        return None


def _chain(record: logging.LogRecord, with_traceback: bool) -> Optional[bytes]:
    """The marshalled frames of the exception: b"" without one, None if the master cannot write it."""
    if record.exc_text or record.stack_info:
        return None
    exc_info = record.exc_info
    if not exc_info:
        return b""
    if not with_traceback:
        return None
    _kind, value, tb = exc_info
    if not isinstance(value, BaseException) or value.__traceback__ is not tb:
        return None  # exc_info=True outside an except block, a hand-made tuple
    frames = tracebacks.extract(value)
    return None if frames is None else marshal.dumps(frames, 4)


#: Logger names as UTF-8: a process logs through a handful of loggers.
_NAME_BYTES: Dict[str, bytes] = {}

#: The head of a lines payload: LINES, line count, levelno, created, name
#: length, chain length, fields length.
_LINES_HEAD = struct.Struct("<BBidHII")
LINES_HEAD_SIZE = _LINES_HEAD.size


def decode_lines(payload: bytes) -> Tuple[int, float, str, List[bytes]]:
    """``(levelno, created, name, lines)`` of :func:`encode_lines`' bytes. Raises ``ValueError``.

    Each line ends with the text of the record's traceback, when it had one.
    """
    try:
        _marker, count, levelno, created, name_size, chain_size, fields_size = _LINES_HEAD.unpack_from(
            payload
        )
        start = LINES_HEAD_SIZE + name_size
        name = payload[LINES_HEAD_SIZE:start].decode("utf-8")
        end = len(payload) - chain_size - fields_size
        if count == 1:
            lines = [payload[start:end]]
        else:
            sizes = struct.unpack_from(f"<{count - 1}I", payload, start)
            position = start + 4 * (count - 1)
            lines = []
            for size in sizes:
                lines.append(payload[position : position + size])
                position += size
            if position > end:
                raise ValueError("lines payload of an unknown shape")
            lines.append(payload[position:end])
    except (struct.error, UnicodeDecodeError) as exc:
        raise ValueError(f"undecodable lines payload: {exc}") from None
    if end < start:
        raise ValueError("lines payload of an unknown shape")
    if chain_size:
        text = traceback_bytes(payload[end : end + chain_size])
        lines = [line + text if line[-1:] == b"\n" else line + b"\n" + text for line in lines]
    return levelno, created, name, lines


def lines_fields(payload: bytes) -> Optional[Tuple[Any, ...]]:
    """The fields a lines payload carries (``with_fields``), as :func:`decode_fields`; None if none.

    Raises ``ValueError``.
    """
    try:
        fields_size = _LINES_HEAD.unpack_from(payload)[6]
    except struct.error as exc:
        raise ValueError(f"undecodable lines payload: {exc}") from None
    if not fields_size:
        return None
    if fields_size > len(payload) - LINES_HEAD_SIZE:
        raise ValueError("lines payload of an unknown shape")
    return decode_fields(payload[len(payload) - fields_size :])


def traceback_bytes(chain: bytes) -> bytes:
    """The UTF-8 text of a marshalled chain of frames (:func:`forklog.tracebacks.extract`)."""
    try:
        frames = marshal.loads(chain)
    except (EOFError, TypeError, ValueError) as exc:
        raise ValueError(f"undecodable traceback: {exc}") from None
    return _rendered(frames).encode("utf-8", "backslashreplace")


def lines_record(levelno: int, created: float, name: str, line: bytes, pid: int) -> logging.LogRecord:
    """A ``LogRecord`` of a payload's line, for a sink that cannot take the line as it is.

    Its formatter or its filters changed after the hub started: the record
    has the logger's name, the level, the time and the pid, and the line the
    emitting process made as its message.
    """
    record = logging.LogRecord(name, levelno, "", 0, line.decode("utf-8", "replace"), None, None)
    record.created = created
    record.msecs = (created - int(created)) * 1000
    record.process = pid
    return record


def _fields(record: logging.LogRecord) -> Tuple[object, ...]:
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


#: Bytes kept free for the truncation marker.
_MARKER_ROOM = 64


def cut_text(text: str, excess: int) -> str:
    """``text`` less at least ``excess`` bytes of its UTF-8 form, and a marker saying so."""
    data = text.encode("utf-8", "surrogatepass")  # what marshal writes for a non-ASCII str
    keep = max(0, len(data) - excess - _MARKER_ROOM)
    while 0 < keep < len(data) and data[keep] & 0xC0 == 0x80:
        keep -= 1  # not in the middle of a character
    kept = data[:keep].decode("utf-8", "surrogatepass")
    return f"{kept} [forklog: truncated {len(text) - len(kept)} characters]"


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
    if type(exception) is tuple and len(exception) == 4:
        # Too big as frames (a deep recursion and a huge message): cut as text.
        exception = (_rendered(exception[3]), exception[1], exception[2])
    parts = list(exception) if type(exception) is tuple else [exception]

    def dumps() -> bytes:
        items[Field.EXCEPTION] = tuple(parts) if type(exception) is tuple else parts[0]
        return marshal.dumps(cast(Any, tuple(items)), 4)

    # The message, the traceback, the stack and the exception's message are
    # cut to one common length, just short enough: the longest lose the most,
    # and a short message is not cut away for a traceback of megabytes.
    texts = [
        (place, index, len(cast(str, place[index]).encode("utf-8", "surrogatepass")))
        for place, index in ((items, Field.MSG), (parts, 0), (items, Field.STACK_INFO), (parts, 2))
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


def _rendered(chain: object) -> str:
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
        return _rendered(exception[3]) if len(exception) == 4 else exception[0]
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
    names = file_names(pathname)
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
        attrs["exc_text"], attrs[EXC_TYPE_ATTR], attrs[EXC_MESSAGE_ATTR] = exception[:3]
        if len(exception) == 4:
            attrs["exc_text"] = _rendered(exception[3])
    if extras:
        for key, value in extras.items():
            attrs.setdefault(key, value)
    record.__dict__ = attrs
    return record
