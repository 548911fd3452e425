"""The fields a record travels as: their order, and the parts of its exception.

:func:`forklog._wire.records.encode` sends a record as a tuple of plain
values; every reader names a field here (:class:`Field`), never by number.
"""

from __future__ import annotations

import logging

__all__ = [
    "EXC_MESSAGE_ATTR",
    "EXC_TYPE_ATTR",
    "FORMAT_VERSION",
    "STANDARD_ATTRS",
    "Exc",
    "Field",
    "valid_time",
]

#: The latest time a record may carry: the end of year 9999 less two days, as far as
#: ``datetime`` and the formatters go in any time zone.
LATEST_TIME = 253402128000.0


def valid_time(value: object) -> bool:
    """Whether ``value`` is a record time the master can format: a float from 1970 to 9999.

    A worker's bytes are untrusted: ``inf`` or ``nan`` in ``created`` once
    raised in the listener (``int(inf)``) and stopped it (issue 21, item 3).
    """
    return type(value) is float and 0.0 <= value <= LATEST_TIME  # nan fails both comparisons


#: 5: the fields travel in a fixed layout (:mod:`forklog._wire.packing`), not
#: as a marshalled tuple. 4: the traceback field of a record with ``exc_info`` is a tuple
#: ``(traceback, type name, message)``, or ``(None, type name, message,
#: frames)`` for the master to write the traceback (:mod:`forklog._wire.tracebacks`),
#: each frame ``(file, line, function, source line)``; 3's frames had no
#: source line (the master read it from the file); 2 had no frames; 1
#: carried the traceback text only.
FORMAT_VERSION = 5


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
