"""Formatters for the master's sinks."""

from __future__ import annotations

import copy
import json
import logging
import math
import re
import sys
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

from forklog import _wire as wire
from forklog._wire import STANDARD_ATTRS, Field, merged_message, safe_repr
from forklog._wire.controls import ESCAPES, escape_lines, escape_values

__all__ = ["JSONFormatter", "TextFormatter", "line_renderer", "record_renderer"]

#: Makes a record's line from :func:`forklog._wire.records.decode_fields`' tuple, the
#: writer's pid and the record's ``exc_text`` (:func:`forklog._wire.records.exception_text`).
Renderer = Callable[[Tuple[Any, ...], int, Any], str]

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
    """A ``logging.Formatter`` that can escape control characters (H15).

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
#
# A line made straight from the decoded fields, without a LogRecord, for the
# formatters whose output is known exactly: logging.Formatter, TextFormatter
# and JSONFormatter themselves (not subclasses) with a %-style format that
# names only attributes every decoded record has. It must be the line
# format(decode(...)) makes, byte for byte (tests/unit/test_fast_lane.py).

#: One ``%`` directive: ``%%`` or ``%(key)<flags><width><.precision><type>``.
_DIRECTIVE = re.compile(r"%(?:%|\((?P<key>[^()]*)\)(?P<spec>[#0+ -]*\d*(?:\.\d+)?[diouxXeEfFgGcrsa]))")

#: The expression of each attribute of a decoded record in the render function.
_SOURCES = {
    "name": f"f[{Field.NAME}]",
    "levelno": f"f[{Field.LEVELNO}]",
    "levelname": f"f[{Field.LEVELNAME}]",
    "msg": f"f[{Field.MSG}]",
    "message": "message",
    "args": "None",
    "created": f"f[{Field.CREATED}]",
    "msecs": f"f[{Field.MSECS}]",
    "relativeCreated": f"f[{Field.RELATIVE_CREATED}]",
    "pathname": f"f[{Field.PATHNAME}]",
    "filename": f"file_names(f[{Field.PATHNAME}])[0]",
    "module": f"file_names(f[{Field.PATHNAME}])[1]",
    "lineno": f"f[{Field.LINENO}]",
    "funcName": f"f[{Field.FUNC_NAME}]",
    "thread": f"f[{Field.THREAD}]",
    "threadName": f"f[{Field.THREAD_NAME}]",
    "processName": f"f[{Field.PROCESS_NAME}]",
    "process": "pid",
    "exc_info": "None",
    "exc_text": "exc_text",
    "stack_info": f"f[{Field.STACK_INFO}]",
    "asctime": "asctime",
}
if sys.version_info >= (3, 12):
    _SOURCES["taskName"] = f"f[{Field.TASK_NAME}]"


class _Stamp:
    """What ``Formatter.formatTime`` reads of a record."""

    __slots__ = ("created", "msecs")

    def __init__(self, created: float, msecs: float) -> None:
        self.created = created
        self.msecs = msecs


def _positional(fmt: str) -> Optional[Tuple[str, List[str]]]:
    """``fmt`` with its ``%(key)`` directives made positional, and the keys; None if unsure."""
    out: List[str] = []
    keys: List[str] = []
    pos = 0
    while True:
        found = fmt.find("%", pos)
        if found < 0:
            out.append(fmt[pos:])
            return "".join(out), keys
        match = _DIRECTIVE.match(fmt, found)
        if match is None:
            return None
        key = match.group("key")
        if key is None:
            out.append(fmt[pos : match.end()])
        else:
            out.append(fmt[pos:found] + "%" + match.group("spec"))
            keys.append(key)
        pos = match.end()


def line_renderer(formatter: Optional[logging.Formatter]) -> Optional[Renderer]:
    """A function that makes ``formatter``'s line from decoded fields, or None if it cannot.

    ``formatter`` None is ``logging``'s default formatter, as ``Handler.format``
    uses. The function reads the formatter's settings once: make it again
    when they change (the listener compares :func:`renderer_key`).
    """
    if formatter is None:
        formatter = logging._defaultFormatter  # type: ignore[attr-defined]
    if type(formatter) is JSONFormatter:
        return _json_renderer(formatter)
    render: Optional[Renderer] = _compiled(
        formatter,
        _SOURCES,
        source="f",
        created=f"f[{Field.CREATED}]",
        msecs=f"f[{Field.MSECS}]",
        stack=f"f[{Field.STACK_INFO}]",
    )
    return render


#: Makes a line from the ``LogRecord`` itself, the writer's pid and the merged message.
RecordRenderer = Callable[[logging.LogRecord, int, str], str]

#: The expression of each attribute in a record renderer: the record's own,
#: except those a record that has neither a traceback nor a stack (the only
#: ones rendered so) holds as None in the fields. ``msg`` and ``args`` are
#: not there: the fields carry the merged message, and the two would differ.
_RECORD_SOURCES = {
    **{key: f"r.{key}" for key in _SOURCES if key not in ("msg", "args", "message", "process", "asctime")},
    "message": "message",
    "process": "pid",
    "asctime": "asctime",
    "exc_info": "None",
    "exc_text": "None",
    "stack_info": "None",
}
if sys.version_info >= (3, 12):
    _RECORD_SOURCES["taskName"] = "r.__dict__.get('taskName')"


def record_renderer(formatter: Optional[logging.Formatter]) -> Optional[RecordRenderer]:
    """A function that makes ``formatter``'s line from a record with neither a traceback nor a stack.

    The line is the one :func:`line_renderer` makes from the record's fields
    (``tests/unit/test_lines.py``); the emitting process makes it without
    the fields (:func:`forklog._wire.lines.encode_lines`). None if it cannot.
    """
    if formatter is None:
        formatter = logging._defaultFormatter  # type: ignore[attr-defined]
    if type(formatter) is JSONFormatter:
        fields_render = _json_renderer(formatter)

        def render_json(record: logging.LogRecord, pid: int, message: str) -> str:
            return fields_render(wire.fields_of(record), pid, None)

        return render_json
    render: Optional[RecordRenderer] = _compiled(
        formatter, _RECORD_SOURCES, source="r", created="r.created", msecs="r.msecs", stack=None
    )
    return render


def _compiled(
    formatter: logging.Formatter,
    sources: Dict[str, str],
    *,
    source: str,
    created: str,
    msecs: str,
    stack: Optional[str],
) -> Optional[Callable[..., str]]:
    """The render function of a %-style ``formatter``: ``render(source, pid, exc_text or message)``."""
    if type(formatter) not in (logging.Formatter, TextFormatter):
        return None
    style = formatter._style
    if type(style) is not logging.PercentStyle or getattr(style, "_defaults", None):
        return None
    parsed = _positional(style._fmt)
    if parsed is None:
        return None
    positional, keys = parsed
    if any(key not in sources for key in keys):
        return None  # an extra, or an attribute only some records have
    from_fields = source == "f"
    lines = [f"def render({source}, pid, {'exc_text' if from_fields else 'message'}):"]
    escape = type(formatter) is TextFormatter and formatter.escape_newlines
    if "message" in keys and from_fields:
        lines.append(f"    message = f[{Field.MSG}]")
    namespace: Dict[str, Any] = {
        "file_names": wire.file_names,
        "FMT": positional,
        "escaped": escape_values,
        "escape_lines": escape_lines,
    }
    if style.usesTime():  # formatTime() runs even when %(asctime) is only in a literal
        datefmt = formatter.datefmt
        if type(formatter) is TextFormatter and datefmt is None:
            namespace.update(
                strftime=time.strftime,
                converter=formatter.converter,
                time_format=formatter.default_time_format,
                cache=[(-1, "")],
            )
            lines += [
                f"    created = {created}",
                # (second, stamp) in one item: threads of a worker share it.
                "    second, stamp = cache[0]",
                "    if int(created) != second:",
                "        stamp = strftime(time_format, converter(created))",
                "        cache[0] = (int(created), stamp)",
                f'    asctime = f"{{stamp}},{{int({msecs}):03d}}"',
            ]
        else:
            namespace.update(format_time=formatter.formatTime, Stamp=_Stamp, datefmt=datefmt)
            lines.append(f"    asctime = format_time(Stamp({created}, {msecs}), datefmt)")
    values = "".join(sources[key] + ", " for key in keys)
    if escape:
        # One isprintable() of the line; its fields escaped only when it fails (TextFormatter.formatMessage).
        lines += [
            f"    values = ({values})",
            "    s = FMT % values",
            "    if not s.isprintable():",
            "        s = FMT % escaped(values)",
        ]
    else:
        lines.append(f"    s = FMT % ({values})")
    if from_fields:
        tail = "escape_lines({})" if escape else "{}"
        lines += [
            "    if exc_text:",
            '        if s[-1:] != "\\n":',
            '            s = s + "\\n"',
            f"        s = s + {tail.format('exc_text')}",
            f"    stack_info = {stack}",
            "    if stack_info:",
            '        if s[-1:] != "\\n":',
            '            s = s + "\\n"',
            f"        s = s + {tail.format('stack_info')}",
        ]
    lines.append("    return s")
    exec("\n".join(lines), namespace)  # our own source, made of the keys checked above
    render: Callable[..., str] = namespace["render"]
    return render


def _json_renderer(formatter: JSONFormatter) -> Renderer:
    line = formatter._line
    standard = STANDARD_ATTRS

    # Each field's place, bound once: the render runs for every record.
    extras_at, created_at, msecs_at, level_at = Field.EXTRAS, Field.CREATED, Field.MSECS, Field.LEVELNAME
    name_at, msg_at, thread_at, stack_at = Field.NAME, Field.MSG, Field.THREAD_NAME, Field.STACK_INFO

    def render(f: Tuple[Any, ...], pid: int, exc_text: Any) -> str:
        extras = f[extras_at]
        items = () if not extras else ((k, v) for k, v in extras.items() if k not in standard)
        return line(
            f[created_at],
            f[msecs_at],
            f[level_at],
            f[name_at],
            f[msg_at],
            pid,
            f[thread_at],
            exc_text,
            f[stack_at],
            items,
        )

    return render


def same_lines(first: logging.Formatter, second: logging.Formatter) -> bool:
    """Whether the two formatters make the same lines (both of a kind :func:`record_renderer` takes)."""
    return renderer_key(first)[1:] == renderer_key(second)[1:]


def renderer_key(formatter: Optional[logging.Formatter]) -> Tuple[Any, ...]:
    """What :func:`line_renderer` read of ``formatter``: its renderer is good while this is equal."""
    if formatter is None:
        return (None,)
    style = getattr(formatter, "_style", None)
    return (
        formatter,
        type(formatter),
        type(style),
        getattr(style, "_fmt", None),
        getattr(style, "_defaults", None),
        formatter.datefmt,
        getattr(formatter, "escape_newlines", None),
        formatter.converter,
        formatter.default_time_format,
        formatter.default_msec_format,
    )
