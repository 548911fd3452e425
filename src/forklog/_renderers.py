"""Lines made without a ``LogRecord``: the fast lane's renderers (see forklog._master.lanes).

A line made straight from the decoded fields, without a LogRecord, for the
formatters whose output is known exactly: logging.Formatter, TextFormatter
and JSONFormatter themselves (not subclasses) with a %-style format that
names only attributes every decoded record has. It must be the line
format(decode(...)) makes, byte for byte (tests/unit/test_fast_lane.py).
"""

from __future__ import annotations

import logging
import re
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from forklog import _wire as wire
from forklog._wire import STANDARD_ATTRS, Field
from forklog._wire.controls import escape_lines, escape_values
from forklog.formatters import JSONFormatter, TextFormatter

__all__ = [
    "RecordRenderer",
    "Renderer",
    "line_renderer",
    "record_renderer",
    "record_renderers",
    "renderer_key",
    "same_lines",
]

#: Makes a record's line from :func:`forklog._wire.records.decode_fields`' tuple, the
#: writer's pid and the record's ``exc_text`` (:func:`forklog._wire.records.exception_text`).
Renderer = Callable[[Tuple[Any, ...], int, Any], str]


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


def record_renderers(line_formatters: Tuple[logging.Formatter, ...]) -> List[Any]:
    """The renderers of ``line_formatters``; none at all if one of them has none."""
    renderers = []
    for formatter in line_formatters:
        try:
            render = record_renderer(formatter)
        except Exception:  # noqa: BLE001
            render = None
        if render is None:
            return []
        renderers.append(render)
    return renderers
