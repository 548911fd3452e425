"""A record's fields as bytes: a fixed layout the master reads field by field.

The payload is a head of fixed size (the numbers, and where each text ends),
the record's exception and its extra fields (checked marshal, when it has
them), then every text of the record as one UTF-8 run::

    version, flags, levelno, created, msecs, relativeCreated, lineno, thread,
    the end of each of 9 texts in the run (in characters), the exception's
    size, the extras' size | exception | extras | name, levelname, message,
    pathname, funcName, threadName, processName, stack, taskName

Nothing in it can make the reader allocate or work more than its length
(issue 21, item 5): the numbers are read by ``struct`` as what they are, a
text's end past the run gives a shorter text, and the nested parts go
through :func:`forklog._wire.checked_marshal.loads`. It is as fast to read
as ``marshal.loads`` of the same fields was, and faster to write.
"""

from __future__ import annotations

import marshal
import struct
from typing import Any, Tuple

from forklog._wire import checked_marshal

__all__ = ["pack", "pack_fields", "unpack_fields"]

_HEAD = struct.Struct("<BBidddqQ11I")
_HEAD_SIZE = _HEAD.size
# Which of the fields that may be None are not.
_HAS_THREAD, _HAS_STACK, _HAS_TASK_NAME = 1, 2, 4


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
        text = "".join(texts).encode("utf-8", "surrogatepass")
    except TypeError:
        raise TypeError(_not_texts(texts)) from None
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
        end1, end2, end3, end4, end5, end6, end7, end8, end8 + len(task_name), len(exc), len(extra),
    )  # fmt: skip
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
    """The tuple :func:`pack_fields` was given. Raises ``ValueError`` on bytes of another shape.

    The numbers are checked for range by the caller
    (:func:`forklog._wire.records.decode_fields`), the exception's shape too.
    """
    try:
        (
            version, flags, levelno, created, msecs, relative, lineno, thread,
            end1, end2, end3, end4, end5, end6, end7, end8, end9, exc_size, extras_size,
        ) = _HEAD.unpack_from(payload)  # fmt: skip
        start = _HEAD_SIZE + exc_size + extras_size
        if start > len(payload):
            raise ValueError("record payload of an unknown shape")
        text = payload[start:].decode("utf-8", "surrogatepass")
        if len(text) != end9:
            raise ValueError("record payload cut short or of an unknown shape")
    except (struct.error, UnicodeDecodeError) as exc:
        raise ValueError(f"undecodable record payload: {exc}") from None
    exception = extras = None
    if exc_size:
        exception = checked_marshal.loads(payload[_HEAD_SIZE : _HEAD_SIZE + exc_size])
    if extras_size:
        extras = checked_marshal.loads(payload[_HEAD_SIZE + exc_size : start])
        if type(extras) is not dict:
            raise ValueError("record payload of an unknown shape")
    return (
        version,
        text[:end1],
        levelno,
        text[end1:end2],
        text[end2:end3],
        created,
        msecs,
        relative,
        text[end3:end4],
        lineno,
        text[end4:end5],
        thread if flags & _HAS_THREAD else None,
        text[end5:end6],
        text[end6:end7],
        exception,
        text[end7:end8] if flags & _HAS_STACK else None,
        text[end8:end9] if flags & _HAS_TASK_NAME else None,
        extras,
    )
