"""A record too big for ``max_record_bytes``: its longest texts cut to fit, each cut said in place."""

from __future__ import annotations

from typing import List, Tuple, cast

from forklog._wire.fields import Exc, Field
from forklog._wire.packing import pack_fields
from forklog._wire.text import cut_text
from forklog._wire.tracebacks import rendered

__all__ = ["truncated"]


def _common_length(lengths: List[int], excess: int) -> int:
    """The largest length that texts of ``lengths`` bytes, cut to it, lose ``excess`` bytes."""
    ordered = sorted(lengths, reverse=True)
    total = 0
    for count, length in enumerate(ordered, 1):
        total += length
        shorter = ordered[count] if count < len(ordered) else 0
        if total - count * shorter >= excess:  # cutting the longest `count` to `shorter` is enough
            return max(0, (total - excess) // count)
    return 0


def truncated(fields: Tuple[object, ...], size: int, max_bytes: int) -> bytes:
    """The payload of ``fields`` (``size`` bytes as they are) cut to at most ``max_bytes``."""
    items = list(fields)
    exception = items[Field.EXCEPTION]
    if type(exception) is tuple and len(exception) == Exc.WITH_FRAMES:
        # Too big as frames (a deep recursion and a huge message): cut as text.
        exception = (rendered(exception[Exc.FRAMES]), exception[Exc.TYPE], exception[Exc.MESSAGE])
    parts = list(exception) if type(exception) is tuple else [exception]

    def dumps() -> bytes:
        items[Field.EXCEPTION] = tuple(parts) if type(exception) is tuple else parts[Exc.TEXT]
        return pack_fields(tuple(items))

    # The message, the traceback, the stack and the exception's message are
    # cut to one common length, just short enough: the longest lose the most,
    # and a short message is not cut away for a traceback of megabytes.
    texts = [
        (place, index, len(cast(str, place[index]).encode("utf-8", "surrogatepass")))
        for place, index in (
            (items, Field.MSG),
            (parts, Exc.TEXT),
            (items, Field.STACK_INFO),
            (parts, Exc.MESSAGE),
        )
        if index < len(place) and isinstance(place[index], str)
    ]
    cap = _common_length([length for _place, _index, length in texts], size - max_bytes)
    for place, index, length in texts:
        if length > cap:
            place[index] = cut_text(cast(str, place[index]), length - cap)
    payload = dumps()
    size = len(payload)
    if size <= max_bytes:
        return payload
    items[Field.EXTRAS] = {
        "forklog_truncated": f"extra fields dropped: {size - max_bytes} bytes over the limit"
    }
    payload = dumps()
    if len(payload) <= max_bytes:
        return payload
    # Still too big: a logger name or a path of megabytes. Every text gets a share.
    share = max_bytes // 32
    for place in (items, parts):
        for index, value in enumerate(place):
            if isinstance(value, str) and len(value.encode("utf-8", "surrogatepass")) > share:
                place[index] = cut_text(value, len(value.encode("utf-8", "surrogatepass")) - share)
    return dumps()
