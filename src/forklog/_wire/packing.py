"""A record's fields as bytes: a fixed layout the master reads field by field.

The payload is a head of fixed size (the numbers, and where each text ends),
the record's exception and its extra fields (checked marshal, when it has
them), then every text of the record as one UTF-8 run::

    version, flags, levelno, created, msecs, relativeCreated, lineno, thread,
    the end of each of 9 texts in the run (in characters), the exception's
    size, the extras' size | exception | extras | name, levelname, message,
    pathname, funcName, threadName, processName, stack, taskName

When no text holds a NUL (nearly always), the texts are joined by NULs
instead (flag ``_SPLIT``; the ends are then 0 but the last, the run's
length): one ``str.split`` in C gives them back, where nine slices cost the
master twice the time. A NUL in any text falls back to the ends.

Nothing in it can make the reader allocate or work more than its length
(issue 21, item 5): the numbers are read by ``struct`` as what they are, a
text's end past the run gives a shorter text, a split run of another
count is refused, and the nested parts go through
:func:`forklog._wire.checked_marshal.loads`.
"""

from __future__ import annotations

import marshal
import struct
from typing import Any, Tuple

from forklog._wire import checked_marshal, tracebacks
from forklog._wire.fields import FORMAT_VERSION, LATEST_TIME, Exc

__all__ = ["pack", "pack_fields", "unpack_fields"]

_HEAD = struct.Struct("<BBidddqQ11I")
_HEAD_SIZE = _HEAD.size
_unpack_head = _HEAD.unpack_from
# Which of the fields that may be None are not.
_HAS_THREAD, _HAS_STACK, _HAS_TASK_NAME = 1, 2, 4
#: The texts are joined by NULs (none holds one) rather than placed by their ends.
_SPLIT = 8
_NUL = "\x00"


def pack_fields(fields: Tuple[object, ...]) -> bytes:
    """The bytes of :func:`forklog._wire.records.fields_of`' tuple (:func:`pack` of its items)."""
    return pack(*fields)


def pack(  # noqa: PLR0917 - a record's fields, in their order (forklog._wire.fields.Field)
    version: Any,
    name: Any,
    levelno: Any,
    levelname: Any,
    message: Any,
    created: Any,
    msecs: Any,
    relative: Any,
    pathname: Any,
    lineno: Any,
    func: Any,
    thread: Any,
    thread_name: Any,
    process_name: Any,
    exception: Any,
    stack: Any,
    task_name: Any,
    extras: Any,
) -> bytes:
    """The bytes of a record's fields, given in :class:`forklog._wire.fields.Field`'s order.

    Raises ``TypeError``, ``ValueError`` or ``struct.error`` (``OverflowError``
    for a number out of range) on fields of other types: the caller mends them.
    """
    flags = 0
    if thread is None:
        thread = 0
    else:
        flags |= _HAS_THREAD
    if stack is None:
        stack = ""
    else:
        flags |= _HAS_STACK
    if task_name is None:
        task_name = ""
    else:
        flags |= _HAS_TASK_NAME
    exc = extra = b""
    if exception is not None:
        exc = marshal.dumps(exception, 4)
    if extras is not None:
        extra = marshal.dumps(extras, 4)
    texts = (name, levelname, message, pathname, func, thread_name, process_name, stack, task_name)
    try:
        run = _NUL.join(texts)
    except TypeError:
        raise TypeError(_not_texts(texts)) from None
    if run.count(_NUL) == 8:  # no text holds a NUL: the master splits the run
        head = _HEAD.pack(
            version, flags | _SPLIT, levelno, created, msecs, relative, lineno, thread,
            0, 0, 0, 0, 0, 0, 0, 0, len(run), len(exc), len(extra),
        )  # fmt: skip
    else:
        run = "".join(texts)
        end1 = len(name)
        end2 = end1 + len(levelname)
        end3 = end2 + len(message)
        end4 = end3 + len(pathname)
        end5 = end4 + len(func)
        end6 = end5 + len(thread_name)
        end7 = end6 + len(process_name)
        end8 = end7 + len(stack)
        head = _HEAD.pack(
            version, flags, levelno, created, msecs, relative, lineno, thread,
            end1, end2, end3, end4, end5, end6, end7, end8, len(run), len(exc), len(extra),
        )  # fmt: skip
    text = run.encode("utf-8", "surrogatepass")
    if exc or extra:
        return b"".join((head, exc, extra, text))
    return head + text


_TEXT_NAMES = (
    "name",
    "levelname",
    "msg",
    "pathname",
    "funcName",
    "threadName",
    "processName",
    "stack_info",
    "taskName",
)


def _not_texts(texts: Tuple[object, ...]) -> str:
    """What the fields that should be text are instead: ``"taskName is a _thread.lock"``."""
    wrong = [
        f"{name} is a {type(value).__name__}"
        for name, value in zip(_TEXT_NAMES, texts, strict=True)
        if type(value) is not str
    ]
    return f"{', '.join(wrong)}, not text"


def unpack_fields(payload: bytes) -> Tuple[Any, ...]:
    """The tuple :func:`pack_fields` was given, checked for shape. Raises ``ValueError``.

    The layout makes the numbers ints and floats (a level a C int); the
    times a formatter takes are checked here (the listener's fast lane
    renders a line straight from the fields), and so are an exception's
    frames (:func:`check_exception`): bytes of another shape make the record
    undecodable, never a fault where it is written. One function, no call
    inside on a record without an exception or extras: this is the
    master's cost per record.
    """
    try:
        (
            version, flags, levelno, created, msecs, relative, lineno, thread,
            end1, end2, end3, end4, end5, end6, end7, end8, end9, exc_size, extras_size,
        ) = _unpack_head(payload)  # fmt: skip
        start = _HEAD_SIZE + exc_size + extras_size
        text = payload[start:].decode("utf-8", "surrogatepass")  # b"" past the end: refused below
    except (struct.error, UnicodeDecodeError) as exc:
        raise ValueError(f"undecodable record payload: {exc}") from None
    # One test for the shape and the numbers a formatter takes (nan fails every comparison).
    if (
        len(text) != end9
        or version != FORMAT_VERSION
        or not (
            0.0 <= created <= LATEST_TIME and -_FINITE < msecs < _FINITE and -_FINITE < relative < _FINITE
        )
    ):
        raise ValueError("record payload cut short or of an unknown shape")
    exception = extras = None
    if exc_size:
        exception = checked_marshal.loads(payload[_HEAD_SIZE : _HEAD_SIZE + exc_size])
        if type(exception) is not str:
            check_exception(exception, len(payload))
    if extras_size:
        extras = checked_marshal.loads(payload[_HEAD_SIZE + exc_size : start])
        if type(extras) is not dict:
            raise ValueError("record payload of an unknown shape")
    if flags & _SPLIT:
        name, levelname, message, pathname, func, thread_name, process_name, stack, task = text.split(_NUL)
    else:
        name, levelname, message, pathname = text[:end1], text[end1:end2], text[end2:end3], text[end3:end4]
        func, thread_name, process_name = text[end4:end5], text[end5:end6], text[end6:end7]
        stack, task = text[end7:end8], text[end8:end9]
    return (
        version,
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
        thread if flags & _HAS_THREAD else None,
        thread_name,
        process_name,
        exception,
        stack if flags & _HAS_STACK else None,
        task if flags & _HAS_TASK_NAME else None,
        extras,
    )


#: Milliseconds and relative times a formatter takes (``%(msecs)d`` of ``inf`` raises).
_FINITE = 1e15


def check_exception(exception: object, size: int) -> None:
    """Raise ``ValueError`` unless the exception field has a shape the worker writes (see Exc)."""
    if type(exception) is not tuple or not all(
        type(part) is str for part in exception[Exc.TYPE : Exc.FRAMES]
    ):
        raise ValueError("record payload of an unknown shape")
    if len(exception) == Exc.WITH_FRAMES and exception[Exc.TEXT] is None:
        tracebacks.check(exception[Exc.FRAMES], size)
    elif len(exception) != Exc.FRAMES or not (
        exception[Exc.TEXT] is None or type(exception[Exc.TEXT]) is str
    ):
        raise ValueError("record payload of an unknown shape")
