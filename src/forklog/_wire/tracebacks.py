"""Tracebacks that cost the worker little: frames travel, the master writes the text.

Formatting a traceback is the dearest thing a log call can do: the
``traceback`` module builds a summary of every frame, reads source lines and,
since Python 3.11, works out the column markers. About 30 µs for a single
frame here, twenty times a plain record. In a request path that is the tail
of every latency percentile.

So a worker only walks the chain of exceptions and takes, for each frame,
the file name, the line number, the function name and the source line, from
:mod:`linecache` as the ``traceback`` module does, stripped, at most
``MAX_SOURCE`` characters (:func:`extract`, a few µs). The master turns that
into the text the ``traceback`` module would print (:func:`render`), minus
the column markers. Exceptions whose text is not just frames and a message
(exception groups, syntax errors, exceptions with ``__notes__``) are
formatted in the worker as before.

The master never opens a file a frame names, for any writer (issue 21, item
6): a frame naming a root-only file, a FIFO or ``/dev/zero`` would have made
it read that file. It writes the source lines that arrived, or none. Frames
come from the pipe and are untrusted: :func:`check` refuses any of another
shape (``ValueError``, counted as an undecodable record) and bounds the walk
by the payload's size; :func:`render` bounds the text it makes.
"""

from __future__ import annotations

import builtins
import linecache
from typing import Any, Dict, List, Optional, Set, Tuple, cast

from forklog._wire.controls import ESCAPES
from forklog._wire.text import safe_repr

__all__ = ["MAX_SOURCE", "MAX_TEXT", "Chain", "check", "extract", "render", "rendered", "type_name"]

#: One frame: file name, line number (None when Python cannot tell), function
#: name, and its source line, stripped ("" when the worker had none).
Frame = Tuple[str, Optional[int], str, str]
#: One exception of a chain, oldest first: its type's name, its message, its
#: frames, and how it came from the one before it (0: the first, 1: ``raise
#: ... from`` it, 2: raised while handling it).
Link = Tuple[str, str, List[Frame], int]
Chain = List[Link]

#: The longest source line a worker sends, in characters; a longer one is cut, with a marker.
MAX_SOURCE = 1024
#: The most characters of traceback text the master makes for one record;
#: the rest is left out, with a marker (a payload's back-references can
#: name one long string many times).
MAX_TEXT = 1 << 21
#: The line numbers a frame may carry (a 5,000-digit number would raise in ``str()``).
_LINENO_LIMIT = 1 << 31

_CAUSE = 1
_CONTEXT = 2
#: How a link may come from the one before it.
_VIAS = (0, _CAUSE, _CONTEXT)
_SEPARATORS = {
    _CAUSE: "\nThe above exception was the direct cause of the following exception:\n\n",
    _CONTEXT: "\nDuring handling of the above exception, another exception occurred:\n\n",
}
#: Identical frames in a row shown before "[Previous line repeated N more times]".
_REPEATS_SHOWN = 3
#: What a frame's line costs beyond its texts, in the master's count of :data:`MAX_TEXT`.
_FRAME_COST = 32
#: Exception groups (3.11+) print as trees, syntax errors show the line and
#: a caret: the full formatter does those.
_GROUP: Optional[type] = getattr(builtins, "BaseExceptionGroup", None)
_FULL_FORMATTER: Tuple[type, ...] = (SyntaxError,) if _GROUP is None else (SyntaxError, _GROUP)
#: type_name() of the exception types seen: a process raises a handful.
_TYPE_NAMES: Dict[type, str] = {}


def type_name(kind: type) -> str:
    """The name the ``traceback`` module prints: qualified unless builtin or ``__main__``."""
    module = kind.__module__
    return kind.__qualname__ if module in ("builtins", "__main__") else f"{module}.{kind.__qualname__}"


def _message(value: BaseException) -> str:
    try:
        return str(value)
    except Exception:  # noqa: BLE001 - what the traceback module prints then
        return "<exception str() failed>"


def _source(filename: str, lineno: Optional[int], module_globals: Dict[str, Any]) -> str:
    """The source line the ``traceback`` module shows for a frame, from this process's ``linecache``.

    As the ``traceback`` module reads it (the globals find the source of a
    module imported from a zip file), except that a file is not checked
    for changes on every traceback (an ``os.stat`` each, ten times the
    rest): the lines a worker read once stay what it shows.
    """
    if not lineno:
        return ""
    try:
        line = linecache.getline(filename, lineno, module_globals).strip()
    except Exception:  # noqa: BLE001 - a loader's get_source() that raised
        return ""
    return _cut(line) if len(line) > MAX_SOURCE else line


def _cut(line: str) -> str:
    return f"{line[:MAX_SOURCE]} [forklog: truncated {len(line) - MAX_SOURCE} characters]"


def extract(value: BaseException) -> Optional[Chain]:
    """The chain of ``value`` as plain data, or None if only the full formatter can show it."""
    links: Chain = []
    seen: Optional[Set[int]] = None  # made for a chain of more than one
    exc: BaseException = value
    cached = linecache.cache.get
    while True:
        if isinstance(exc, _FULL_FORMATTER) or getattr(exc, "__notes__", None) is not None:
            return None
        frames: List[Frame] = []
        tb = exc.__traceback__
        while tb is not None:
            frame = tb.tb_frame
            code = frame.f_code
            filename, lineno = code.co_filename, tb.tb_lineno
            # linecache.getline() inline for a file it holds: (size, mtime, lines, path).
            entry = cached(filename)
            if entry is not None and len(entry) == 4 and lineno and 0 < lineno <= len(entry[2]):
                source = entry[2][lineno - 1].strip()
                if len(source) > MAX_SOURCE:
                    source = _cut(source)
            else:
                source = _source(filename, lineno, frame.f_globals)
            frames.append((filename, lineno, code.co_name, source))
            tb = tb.tb_next
        kind = type(exc)
        name = _TYPE_NAMES.get(kind)
        if name is None:
            if len(_TYPE_NAMES) > 1024:
                _TYPE_NAMES.clear()
            name = _TYPE_NAMES[kind] = type_name(kind)
        following: Optional[BaseException] = exc.__cause__
        via = _CAUSE
        if following is None:
            following, via = exc.__context__, _CONTEXT
            if following is not None and exc.__suppress_context__:
                following = None
        links.append((name, _message(exc), frames, via if following is not None else 0))
        if following is None:
            break
        if seen is None:
            seen = {id(value)}
        if id(following) in seen:
            break  # a cycle: the traceback module stops there too
        seen.add(id(following))
        exc = following
    links.reverse()
    return links


def check(chain: object, size: int) -> Chain:
    """``chain``, read from ``size`` bytes of a worker's payload, if it has :func:`extract`'s shape.

    Raises ``ValueError`` otherwise: a list of links ``(str, str, list of
    frames, 0, 1 or 2)``, each frame ``(str, int or None, str, str)``. The
    walk stops, refusing the chain, past ``size`` links and frames: one
    costs a payload at least a byte, unless it names an object already sent
    (a marshal back-reference), which :func:`extract` never makes of a frame
    or a list of them.
    """
    if type(chain) is not list:
        raise ValueError("traceback of an unknown shape")
    room = size
    for link in chain:
        room -= 1
        if (
            type(link) is not tuple
            or len(link) != 4
            or type(link[0]) is not str
            or type(link[1]) is not str
            or type(link[2]) is not list
            or type(link[3]) is not int
            or link[3] not in _VIAS
        ):
            raise ValueError("traceback of an unknown shape")
        frames = link[2]
        room -= len(frames)
        if room < 0:
            raise ValueError("traceback of more frames than its payload can hold")
        for frame in frames:
            if (
                type(frame) is not tuple
                or len(frame) != 4
                or type(frame[0]) is not str
                or not (
                    frame[1] is None or (type(frame[1]) is int and -_LINENO_LIMIT < frame[1] < _LINENO_LIMIT)
                )
                or type(frame[2]) is not str
                or type(frame[3]) is not str
            ):
                raise ValueError("traceback frame of an unknown shape")
    return cast(Chain, chain)


def render(chain: Chain, limit: int = MAX_TEXT) -> str:
    """The text ``traceback.format_exception`` gives for the chain (without column markers).

    The source lines are the ones the frames carry: no file is read. The
    text is at most about ``limit`` characters, its messages and frames
    counted as they are met: past that, the rest of the chain is left out
    with a marker, and the last exception's line ends it.
    """
    parts: List[str] = []
    room = limit
    for index, (name, message, frames, via) in enumerate(chain):
        room -= len(name) + len(message) + _FRAME_COST
        if room < 0:
            break
        if index:
            # This exception was raised from the one before it, or while handling it.
            parts.append(_SEPARATORS.get(via, _SEPARATORS[_CONTEXT]))
        if frames:
            parts.append("Traceback (most recent call last):\n")
            room = _frame_lines(frames, parts, room)
            if room < 0:
                break
        parts.append(f"{name}: {message}\n" if message else f"{name}\n")
    else:
        return "".join(parts).rstrip("\n")
    parts.append(f"[forklog: the rest of the traceback left out, over {limit} characters]\n")
    name, message = chain[-1][0], chain[-1][1]
    parts.append(f"{name}: {message}\n" if message else f"{name}\n")
    return "".join(parts).rstrip("\n")


def _frame_lines(frames: List[Frame], lines: List[str], room: int) -> int:
    """Append the lines of ``frames`` to ``lines``; the room left, below 0 if they did not all fit.

    As traceback.StackSummary.format: a frame repeated in a row (recursion)
    is shown _REPEATS_SHOWN + 1 times, then counted. Every frame is counted
    against ``room``, shown or not: comparing it with the one before costs
    up to its length.
    """
    last: Optional[Frame] = None
    count = 0
    for frame in frames:
        filename, lineno, function, source = frame
        room -= len(filename) + len(function) + len(source) + _FRAME_COST
        if room < 0:
            return room
        if frame != last:
            if count > _REPEATS_SHOWN:
                lines.append(_repeated(count - _REPEATS_SHOWN))
            last, count = frame, 0
        count += 1
        if count > _REPEATS_SHOWN:
            continue
        # A file's name, a function's and a source line never hold a line break
        # or another control character: one that does (a worker's doing) is escaped.
        if not (filename + function + source).isprintable():
            filename, function, source = (text.translate(ESCAPES) for text in (filename, function, source))
        lines.append(f'  File "{filename}", line {lineno}, in {function}\n')
        if source:
            lines.append(f"    {source}\n")
    if count > _REPEATS_SHOWN:
        lines.append(_repeated(count - _REPEATS_SHOWN))
    return room


def _repeated(count: int) -> str:
    return f"  [Previous line repeated {count} more time{'s' if count > 1 else ''}]\n"


def rendered(chain: object, limit: int = MAX_TEXT) -> str:
    """:func:`render` of frames that may not be well formed (:func:`check` them first): never raises."""
    try:
        return render(cast(Chain, chain), limit)
    except Exception as exc:  # noqa: BLE001
        return f"[forklog: could not write the traceback: {safe_repr(exc)}]"
