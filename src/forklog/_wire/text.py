"""Text that never raises: what any value of an application's record becomes on the wire.

A record's message, its arguments and its extras are whatever the
application passed; a ``__repr__`` or a ``__str__`` may raise or recurse.
Everything here returns text (or plain data marshal can carry) whatever the
value, so that encoding a record never raises (DESIGN H10).
"""

from __future__ import annotations

import itertools
import logging
from typing import Dict

__all__ = ["cut_text", "merged_message", "plain", "safe_repr", "safe_str"]

#: Nesting depth and item count kept for containers inside ``extra``.
_MAX_DEPTH = 4


_MAX_ITEMS = 1000


_SCALARS = (str, int, float, bool, type(None))


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


def plain(value: object, depth: int = 0) -> object:
    """Return ``value`` if marshal can carry it as plain data, else its repr."""
    kind = type(value)
    if kind in _SCALARS:
        return value
    if depth < _MAX_DEPTH:
        if kind is list or kind is tuple:
            items = value[:_MAX_ITEMS]  # type: ignore[index]
            return [plain(item, depth + 1) for item in items]
        if kind is dict:
            out: Dict[str, object] = {}
            for index, (key, item) in enumerate(value.items()):  # type: ignore[attr-defined]
                if index >= _MAX_ITEMS:
                    break
                name = key if type(key) is str else safe_repr(key)
                out[name] = plain(item, depth + 1)
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
