"""``marshal.loads`` for bytes a worker wrote: sizes checked before marshal allocates anything.

``marshal.loads`` allocates what a container's header announces before it
reads a single item: five bytes announcing a tuple of 2^27 items made the
master allocate 1 GiB, a list of 2^31-1 items cost it 4 s of CPU per frame,
holding the GIL (issue 21, item 5). :func:`loads` first walks the bytes,
without building anything, and refuses them unless every count and length
fits in the bytes that are left (an item costs at least one byte), the
nesting stays shallow and every type is plain data (no code object, no set,
no bytes). Back-references are the one way a few bytes can name much: they
may name only a text or a number, never a list, a tuple or a dict (which a
few bytes could nest into exponential work for whoever walks the value), and
the texts they name add up to a bound proportional to the bytes read.

Only the nested parts of a record travel this way (its exception and its
extra fields); the fixed fields have a layout of their own
(:mod:`forklog._wire.packing`).
"""

from __future__ import annotations

import marshal

__all__ = ["loads", "MAX_DEPTH"]

#: How deep values may nest: extras are cut at 4 levels (``plain``), a traceback's chain is 3.
MAX_DEPTH = 16
_FLAG_REF = 0x80
#: Type codes of marshal's version 4 that plain data is written with.
_FIXED = {ord("N"): 0, ord("F"): 0, ord("T"): 0, ord("i"): 4, ord("g"): 8}
_TEXT_LONG = frozenset(map(ord, "utaA"))  # a 4-byte length, then the bytes
_TEXT_SHORT = frozenset(map(ord, "zZ"))  # a 1-byte length
_SINGLETONS = frozenset(map(ord, "NFT"))
_LONG, _TUPLE, _SMALL_TUPLE, _LIST, _DICT, _NULL, _REF = map(ord, "l()[{0r")
_CONTAINER = -1  # what a container is registered as, for back-references
_NUMBER = -2  # what a number is registered as
_IN_DICT_KEY = -1  # a dict's place in the stack while a key (or its end) comes next
_IN_DICT_VALUE = -2


def _int32(data: bytes, position: int) -> int:
    if position + 4 > len(data):
        raise ValueError("marshal data too short")
    return int.from_bytes(data[position : position + 4], "little", signed=True)


def check(data: bytes) -> None:
    """Raise ``ValueError`` unless ``data`` is marshal of plain values whose every size fits in it."""
    size = len(data)
    budget = max(1 << 20, 64 * size)  # text named again by back-references
    refs: list[int] = []  # each registered object: a text's size, _NUMBER or _CONTAINER
    stack = [1]  # items still to read in each open container (one value in all)
    position = 0
    while stack:
        left = stack[-1]
        if left == 0:
            stack.pop()
            continue
        if position >= size:
            raise ValueError("marshal data too short")
        code = data[position] & ~_FLAG_REF
        flagged = data[position] & _FLAG_REF
        position += 1
        key = False
        if left > 0:
            stack[-1] = left - 1
        elif left == _IN_DICT_KEY:
            if code == _NULL:
                stack.pop()
                continue
            # Keys are texts (as plain() makes them): numbers' hashes are known, and
            # keys that all collide would cost the master time quadratic in their count.
            if not (code in _TEXT_SHORT or code in _TEXT_LONG or code == _REF):
                raise ValueError("a dict key that is not a text")
            stack[-1] = _IN_DICT_VALUE
            key = True
        else:
            stack[-1] = _IN_DICT_KEY
        if code in _FIXED:
            position += _FIXED[code]
            if flagged and code not in _SINGLETONS:  # marshal never registers them
                refs.append(_NUMBER)
        elif code in _TEXT_SHORT or code in _TEXT_LONG:
            if code in _TEXT_SHORT:
                length = data[position] if position < size else -1
                position += 1
            else:
                length = _int32(data, position)
                position += 4
            if length < 0 or length > size - position:
                raise ValueError("a text longer than its payload")
            position += length
            if flagged:
                refs.append(length)
        elif code == _LONG:
            digits = abs(_int32(data, position))
            position += 4
            if 2 * digits > size - position:
                raise ValueError("a number longer than its payload")
            position += 2 * digits
            if flagged:
                refs.append(_NUMBER)
        elif code in (_TUPLE, _SMALL_TUPLE, _LIST, _DICT):
            if code == _SMALL_TUPLE:
                count = data[position] if position < size else -1
                position += 1
            elif code == _DICT:
                count = _IN_DICT_KEY
            else:
                count = _int32(data, position)
                position += 4
            if count > size - position or count < _IN_DICT_KEY or (count < 0 and code != _DICT):
                raise ValueError("a container of more items than its payload holds")
            if flagged:
                refs.append(_CONTAINER)
            stack.append(count)
            if len(stack) > MAX_DEPTH + 1:
                raise ValueError("values nested too deep")
        elif code == _REF:
            index = _int32(data, position)
            position += 4
            if not 0 <= index < len(refs) or refs[index] == _CONTAINER or (key and refs[index] < 0):
                raise ValueError("a back-reference to a container or to nothing")
            budget -= max(8, refs[index])
            if budget < 0:
                raise ValueError("back-references name more text than their payload may")
        else:
            raise ValueError(f"a value of marshal type {chr(code)!r}, not plain data")
        if position > size:
            raise ValueError("marshal data too short")
    if position != size:
        raise ValueError("bytes after the value")


def loads(data: bytes) -> object:
    """The value of ``data``, checked first (:func:`check`). Raises ``ValueError``."""
    check(data)
    try:
        return marshal.loads(data)
    except (EOFError, TypeError, ValueError) as exc:
        raise ValueError(f"undecodable value: {exc}") from None
