"""Control characters: what the operator's terminal never gets raw (DESIGN H15; issue 21, item 9).

One table for every place that escapes: forklog's console formatter (every
field), the master's check of the lines a worker made for it, a
traceback's file names, functions and source lines, and forklog's own
lines on stderr. C0 characters but TAB, DEL and the C1 characters are
written ``\\xNN``, CR and LF ``\\r`` and ``\\n``.
"""

from __future__ import annotations

import re
from typing import Any, Dict, Tuple

__all__ = [
    "CONTROL_BYTES",
    "ESCAPES",
    "clean",
    "escape_controls",
    "escape_lines",
    "escape_line_bytes",
    "escape_values",
]

#: A ``str.translate`` table: each control character and what is written instead.
ESCAPES: Dict[int, str] = {
    code: "\\r" if code == 13 else "\\n" if code == 10 else f"\\x{code:02x}"
    for code in (*range(9), *range(10, 32), *range(127, 160))
}
#: The same, keeping LF: a traceback's own line breaks.
_LINE_ESCAPES: Dict[int, str] = {code: text for code, text in ESCAPES.items() if code != 10}

#: The bytes of UTF-8 text that are control characters on their own (C0 but TAB, DEL).
#: A C1 character is two bytes, ``\xc2`` then ``\x80`` to ``\x9f``.
CONTROL_BYTES = bytes(code for code in sorted(ESCAPES) if code < 128)
_CONTROL = re.compile(b"[" + re.escape(CONTROL_BYTES) + b"]|\xc2[\x80-\x9f]")


def escape_controls(text: str) -> str:
    """``text`` with every control character escaped."""
    return text if text.isprintable() else text.translate(ESCAPES)


def escape_lines(text: str) -> str:
    """``text`` (a traceback, a stack) with its control characters escaped but its line breaks."""
    return text.translate(_LINE_ESCAPES)


def clean(line: bytes) -> bool:
    """Whether UTF-8 ``line`` holds no control character (at C speed: no loop in Python)."""
    if line.isascii():
        return len(line.translate(None, CONTROL_BYTES)) == len(line)
    return _CONTROL.search(line) is None


def escape_line_bytes(line: bytes) -> bytes:
    """UTF-8 ``line`` with its control characters escaped."""
    return escape_controls(line.decode("utf-8", "replace")).encode("utf-8")


def escape_values(values: Tuple[Any, ...]) -> Tuple[Any, ...]:
    """``values`` (a format's) with each text escaped."""
    return tuple(value.translate(ESCAPES) if type(value) is str else value for value in values)
