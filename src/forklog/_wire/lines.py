"""The lines payload: a record's lines, made in the emitting process, for the master to append.

When every sink of a hub is a file or a stream whose formatter forklog can
reproduce, the emitting process makes the lines itself and the master only
writes them (README "Performance"). A record with an exception carries its
chain of frames; the master writes the traceback's text after each line.
"""

from __future__ import annotations

import logging
import marshal
import struct
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

from forklog._wire import checked_marshal, records, tracebacks
from forklog._wire.fields import valid_time
from forklog._wire.packing import pack_fields
from forklog._wire.text import merged_message

__all__ = [
    "LINES",
    "LINES_HEAD",
    "LINES_HEAD_SIZE",
    "LinesPayload",
    "MAX_LINES",
    "TracedLines",
    "decode_lines",
    "encode_lines",
    "lines_fields",
    "lines_record",
    "traceback_bytes",
]

#: The first byte of a payload of lines made in the emitting process
#: (:func:`encode_lines`); a fields payload starts with its version, never 0.
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
    (:func:`forklog._renderers.record_renderer`, one per distinct
    formatter) and the master only writes them. A record with an exception
    sends its chain of frames too, each with its source line, when
    ``with_traceback`` (every formatter puts the traceback after the line):
    the master writes the traceback's text after each line
    (:mod:`forklog._wire.tracebacks`), reading no file. Anything else, a stack,
    a record whose fields :func:`encode` would have to mend, text that is
    not valid UTF-8, takes the fields path: None.

    ``with_fields`` adds the fields :func:`encode` would send, for sinks that
    need a ``LogRecord`` (syslog, OTLP) beside the files: see :func:`lines_fields`.

    The payload: ``LINES``, the number of lines, the level, the time, the
    length of the logger's name (for a sink that cannot take the lines, see
    :func:`lines_record`), the lengths of the chain and of the fields, the
    name, the byte length of each line but the last, the lines (UTF-8,
    without terminators), the chain (marshal), then the fields (:mod:`forklog._wire.packing`).
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
        fields = pack_fields(records.fields_of(record)) if with_fields else b""
        count = len(renderers)
        head = LINES_HEAD.pack(LINES, count, levelno, created, len(name_bytes), len(chain), len(fields))
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
LINES_HEAD = struct.Struct("<BBidHII")


LINES_HEAD_SIZE = LINES_HEAD.size


#: The most lines one payload may carry: one a distinct formatter of the hub's
#: files and streams. Each line gets the traceback's text: the bound keeps a
#: small payload from making many copies of a long one.
MAX_LINES = 16


class TracedLines(List[bytes]):
    """A payload's lines when each ends with the text of the record's traceback, made here.

    ``traceback`` is that text: a sink that escapes its lines (forklog's
    console) checks what the emitting process made apart from it.
    """

    traceback: bytes = b""


class LinesPayload(NamedTuple):
    """A decoded lines payload (:func:`decode_lines`)."""

    levelno: int
    created: float
    #: The logger's name.
    name: str
    #: One line per formatter, UTF-8, each with its traceback's text when the record had one.
    lines: List[bytes]


def decode_lines(payload: bytes) -> LinesPayload:
    """The lines payload of :func:`encode_lines`' bytes. Raises ``ValueError``.

    Each line ends with the text of the record's traceback, when it had one.
    """
    try:
        _marker, count, levelno, created, name_size, chain_size, fields_size = LINES_HEAD.unpack_from(payload)
        if not 0 < count <= MAX_LINES:
            raise ValueError(f"a lines payload of {count} lines")
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
    if end < start or not valid_time(created):
        raise ValueError("lines payload of an unknown shape")
    if chain_size:
        text = traceback_bytes(payload[end : end + chain_size])
        traced = TracedLines(line + text if line[-1:] == b"\n" else line + b"\n" + text for line in lines)
        traced.traceback = text
        lines = traced
    return LinesPayload(levelno, created, name, lines)


def lines_fields(payload: bytes) -> Optional[Tuple[Any, ...]]:
    """The fields a lines payload carries (``with_fields``), as :func:`decode_fields`; None if none.

    Raises ``ValueError``.
    """
    try:
        fields_size = LINES_HEAD.unpack_from(payload)[6]
    except struct.error as exc:
        raise ValueError(f"undecodable lines payload: {exc}") from None
    if not fields_size:
        return None
    if fields_size > len(payload) - LINES_HEAD_SIZE:
        raise ValueError("lines payload of an unknown shape")
    return records.decode_fields(payload[len(payload) - fields_size :])


def traceback_bytes(chain: bytes) -> bytes:
    """The UTF-8 text of a marshalled chain of frames (:func:`forklog._wire.tracebacks.extract`).

    Raises ``ValueError`` on frames of another shape (:func:`forklog._wire.tracebacks.check`).
    """
    frames = checked_marshal.loads(chain)
    checked = tracebacks.check(frames, len(chain))
    # Back-references let a few bytes name a long text many times: the text
    # is bounded by the chain's own size (generously: a file's name once, its
    # frames many), so the master's work stays proportional to what it read.
    limit = min(tracebacks.MAX_TEXT, max(64 << 10, 16 * len(chain)))
    return tracebacks.rendered(checked, limit).encode("utf-8", "backslashreplace")


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
