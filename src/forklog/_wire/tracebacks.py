"""Tracebacks that cost the worker almost nothing: frames travel, the master writes the text.

Formatting a traceback is the dearest thing a log call can do: the
``traceback`` module builds a summary of every frame, reads source lines and,
since Python 3.11, works out the column markers. About 30 µs for a single
frame here, twenty times a plain record. In a request path that is the tail
of every latency percentile.

So a worker only walks the chain of exceptions and takes, for each frame,
the file name, the line number and the function name (:func:`extract`, a
few µs). The master turns that into the text the ``traceback`` module would
print (:func:`render`), reading the source lines from the same files with
:mod:`linecache`, minus the column markers. Exceptions whose text is not
just frames and a message (exception groups, syntax errors, exceptions with
``__notes__``) are formatted in the worker as before.
"""

from __future__ import annotations

import builtins
import linecache
from typing import Dict, List, Optional, Set, Tuple, cast

from forklog._wire.text import safe_repr

__all__ = ["Chain", "extract", "render", "rendered", "type_name"]

#: One frame: file name, line number (None when Python cannot tell), function name.
Frame = Tuple[str, Optional[int], str]
#: One exception of a chain, oldest first: its type's name, its message, its
#: frames, and how it came from the one before it (0: the first, 1: ``raise
#: ... from`` it, 2: raised while handling it).
Link = Tuple[str, str, List[Frame], int]
Chain = List[Link]

_CAUSE = 1
_CONTEXT = 2
_SEPARATORS = {
    _CAUSE: "\nThe above exception was the direct cause of the following exception:\n\n",
    _CONTEXT: "\nDuring handling of the above exception, another exception occurred:\n\n",
}
#: Identical frames in a row shown before "[Previous line repeated N more times]".
_REPEATS_SHOWN = 3
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


def extract(value: BaseException) -> Optional[Chain]:
    """The chain of ``value`` as plain data, or None if only the full formatter can show it."""
    links: Chain = []
    seen: Optional[Set[int]] = None  # made for a chain of more than one
    exc: BaseException = value
    while True:
        if isinstance(exc, _FULL_FORMATTER) or getattr(exc, "__notes__", None) is not None:
            return None
        frames: List[Frame] = []
        tb = exc.__traceback__
        while tb is not None:
            code = tb.tb_frame.f_code
            frames.append((code.co_filename, tb.tb_lineno, code.co_name))
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


def render(chain: Chain) -> str:
    """The text ``traceback.format_exception`` gives for the chain (without column markers)."""
    parts: List[str] = []
    checked: Set[str] = set()
    for index, (name, message, frames, via) in enumerate(chain):
        if index:
            # This exception was raised from the one before it, or while handling it.
            parts.append(_SEPARATORS.get(via, _SEPARATORS[_CONTEXT]))
        if frames:
            parts.append("Traceback (most recent call last):\n")
            parts.extend(_frame_lines(frames, checked))
        parts.append(f"{name}: {message}\n" if message else f"{name}\n")
    return "".join(parts).rstrip("\n")


def _frame_lines(frames: List[Frame], checked: Set[str]) -> List[str]:
    # As traceback.StackSummary.format: a frame repeated in a row (recursion)
    # is shown _REPEATS_SHOWN + 1 times, then counted.
    lines: List[str] = []
    last: Optional[Frame] = None
    count = 0
    for frame in frames:
        if frame != last:
            if count > _REPEATS_SHOWN:
                lines.append(_repeated(count - _REPEATS_SHOWN))
            last, count = frame, 0
        count += 1
        if count > _REPEATS_SHOWN:
            continue
        filename, lineno, function = frame
        lines.append(f'  File "{filename}", line {lineno}, in {function}\n')
        if lineno:
            if filename not in checked:
                checked.add(filename)
                linecache.checkcache(filename)  # the file may have changed since the master read it
            source = linecache.getline(filename, lineno).strip()
            if source:
                lines.append(f"    {source}\n")
    if count > _REPEATS_SHOWN:
        lines.append(_repeated(count - _REPEATS_SHOWN))
    return lines


def _repeated(count: int) -> str:
    return f"  [Previous line repeated {count} more time{'s' if count > 1 else ''}]\n"


def rendered(chain: object) -> str:
    """:func:`render` of frames from the pipe, which are not trusted to be well formed: never raises."""
    try:
        return render(cast(Chain, chain))
    except Exception as exc:  # noqa: BLE001
        return f"[forklog: could not write the traceback: {safe_repr(exc)}]"
