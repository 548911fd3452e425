"""What an adopted handler writes to, as plain data, and the payload that carries its lines.

Both sides use this module. An emitting process describes a file or stream
handler the application configured as a :class:`TargetSpec` (its class
reduced to a ``kind`` from an allow-list, the path, the mode, the rotation
settings, the encoding) and sends each line that handler formatted in a
*target payload*. The master opens one sink per target from the spec alone:
nothing in the pipe names a class or a callable (see ``_master/targets.py``
for the checks it makes before it opens anything).

A target payload: the marker byte ``TARGET_BYTE``, the level, the time, the
spec's length, the spec (a fixed layout of numbers and texts, see
:meth:`TargetSpec.to_bytes`), then the text
the handler would have written (its formatter's line and terminator, as
UTF-8 with lone surrogates kept, ``surrogatepass``).
"""

from __future__ import annotations

import codecs
import datetime
import encodings
import encodings.aliases
import logging
import logging.handlers
import os
import pkgutil
import struct
import sys
from typing import Any, FrozenSet, List, NamedTuple, Optional, Tuple

from forklog._wire.fields import valid_time

__all__ = [
    "KINDS",
    "TARGET_BYTE",
    "TargetLine",
    "TargetSpec",
    "decode",
    "encode",
    "spec_of",
    "text_encoding",
]

#: The first byte of a target payload (a lines payload starts with 0, a
#: fields payload with its version, never 1).
TARGET = 1
TARGET_BYTE = bytes([TARGET])
_HEAD = struct.Struct("<BidI")  # marker, levelno, created, spec length

#: The kinds of target, and the handler classes whose I/O each stands for.
KINDS = ("file", "rotating", "timed", "watched", "stream")
STREAMS = ("stdout", "stderr")
_ERRORS = ("strict", "ignore", "replace", "backslashreplace", "surrogateescape", "xmlcharrefreplace")


class TargetSpec(NamedTuple):
    """One file or standard stream, and how its handler writes and rotates it."""

    kind: str  # one of KINDS
    path: str  # an absolute path, or "stdout" / "stderr" for a stream
    mode: str = "a"  # "a", or "w" (truncated once, when the master opens it)
    encoding: Optional[str] = None
    errors: Optional[str] = None
    max_bytes: int = 0  # rotating: RotatingFileHandler's maxBytes
    backup_count: int = 0
    when: str = "h"  # timed: TimedRotatingFileHandler's when, interval, utc, atTime
    interval: int = 1
    utc: bool = False
    at_time: Optional[int] = None  # seconds after midnight

    def to_bytes(self) -> bytes:
        """Fixed-layout bytes: the numbers, then each text with its length (not marshal: see from_bytes)."""
        at = -1 if self.at_time is None else self.at_time
        head = _SPEC.pack(self.max_bytes, self.backup_count, self.interval, int(self.utc), at)
        texts = (self.kind, self.path, self.mode, self.encoding, self.errors, self.when)
        return head + b"".join(_text(value) for value in texts)

    @classmethod
    def from_bytes(cls, data: bytes) -> TargetSpec:
        """Read and check a spec from the pipe. Raises ``ValueError`` for anything else.

        A fixed layout read field by field: unlike ``marshal``, whose input
        declares sizes it then allocates, a hostile spec costs its length.
        """
        if len(data) > MAX_SPEC_BYTES:
            raise ValueError("a target spec too long")
        try:
            max_bytes, backup_count, interval, utc, at = _SPEC.unpack_from(data)
            position = _SPEC.size
            texts: List[Optional[str]] = []
            for _ in range(6):
                (size,) = _LENGTH.unpack_from(data, position)
                position += _LENGTH.size
                if size == _NONE:
                    texts.append(None)
                    continue
                texts.append(data[position : position + size].decode("utf-8"))
                if position + size > len(data):
                    raise ValueError("a target spec cut short")
                position += size
        except (struct.error, UnicodeDecodeError) as exc:
            raise ValueError(f"undecodable target: {exc}") from None
        if position != len(data):
            raise ValueError("a target spec of an unknown shape")
        kind, path, mode, encoding, errors, when = texts
        if kind is None or path is None or mode is None or when is None:
            raise ValueError("a target spec with a missing field")
        spec = cls(
            kind,
            path,
            mode,
            encoding,
            errors,
            max_bytes,
            backup_count,
            when,
            interval,
            bool(utc),
            None if at < 0 else at,
        )
        spec.check()
        return spec

    def check(self) -> None:
        """Raise ``ValueError`` unless every value has its plain type and range."""
        types: Tuple[Tuple[Any, Tuple[type, ...]], ...] = (
            (self.kind, (str,)),
            (self.path, (str,)),
            (self.mode, (str,)),
            (self.encoding, (str, type(None))),
            (self.errors, (str, type(None))),
            (self.max_bytes, (int,)),
            (self.backup_count, (int,)),
            (self.when, (str,)),
            (self.interval, (int,)),
            (self.utc, (bool,)),
            (self.at_time, (int, type(None))),
        )
        for value, allowed in types:
            if type(value) not in allowed:
                raise ValueError(f"a target with a {type(value).__name__} where {allowed} belongs")
        if self.kind not in KINDS:
            raise ValueError(f"a target of kind {self.kind!r}: expected one of {KINDS}")
        if self.kind == "stream":
            if self.path not in STREAMS:
                raise ValueError(f"a stream target {self.path!r}: expected stdout or stderr")
        elif not os.path.isabs(self.path) or "\0" in self.path:
            raise ValueError(f"a file target {self.path!r}: expected an absolute path")
        if self.mode not in ("a", "w"):
            raise ValueError(f"a target with mode {self.mode!r}: expected 'a' or 'w'")
        if self.errors is not None and self.errors not in _ERRORS:
            raise ValueError(f"a target with errors={self.errors!r}: expected one of {_ERRORS}")
        if self.encoding is not None and text_encoding(self.encoding) is None:
            raise ValueError(f"a target with encoding={self.encoding[:_MAX_ENCODING]!r}: not a text encoding")
        if not (0 <= self.max_bytes < 1 << 62 and 0 <= self.backup_count <= 10_000 and self.interval >= 1):
            raise ValueError("a target with rotation settings out of range")
        if self.at_time is not None and not 0 <= self.at_time < 86_400:
            raise ValueError(f"a target with at_time={self.at_time!r}: expected seconds of a day")

    @property
    def label(self) -> str:
        """The name of the master's sink for this target (``stats()``)."""
        return f"<{self.path}>" if self.kind == "stream" else self.path


#: The numbers of a spec: max_bytes, backup_count, interval, utc, at_time (-1: none).
_SPEC = struct.Struct("<QIIBi")
_LENGTH = struct.Struct("<H")
_NONE = 0xFFFF
#: The longest spec the master reads (a path of up to 4 KiB and the rest).
MAX_SPEC_BYTES = 8192


def _text(value: Optional[str]) -> bytes:
    if value is None:
        return _LENGTH.pack(_NONE)
    data = value.encode("utf-8", "surrogatepass")
    if len(data) >= _NONE:
        raise ValueError("a target spec text too long")
    return _LENGTH.pack(len(data)) + data


#: The longest encoding name read (the stdlib's longest is 20 characters).
_MAX_ENCODING = 64
#: Text codecs that fail on ordinary lines (every one, or a long or dotted one):
#: a first spec naming one would lose every other writer's lines to that target.
_NOT_FOR_LINES = frozenset({"undefined", "idna", "punycode", "charmap", "aliases"})
_codec_modules: Optional[FrozenSet[str]] = None


def text_encoding(name: str) -> Optional[str]:
    """The stdlib codec module ``name`` stands for, if lines can be written with it; else None.

    Decided from the names of the stdlib's codec modules and aliases, never
    by a codec lookup of ``name`` itself: the codec registry and
    ``encodings`` keep every name they are asked for, so a writer sending
    endless variants of a name would grow them without bound. Only the
    returned name, one of a fixed set, is ever looked up.
    """
    global _codec_modules  # noqa: PLW0603 - a fixed set, listed once
    if name == "locale":  # open()'s own name for the master's locale encoding (FileHandler's default)
        return name
    if len(name) > _MAX_ENCODING:
        return None
    if _codec_modules is None:
        found = {module.name for module in pkgutil.iter_modules(encodings.__path__)}
        _codec_modules = frozenset(found | set(encodings.aliases.aliases.values()))
    key = encodings.normalize_encoding(name.lower())
    aliases = encodings.aliases.aliases
    module = aliases.get(key) or aliases.get(key.replace(".", "_")) or key
    if module in _NOT_FOR_LINES or module not in _codec_modules:
        return None
    try:
        info = codecs.lookup(module)
    except LookupError:  # a codec of another platform (mbcs, oem)
        return None
    return module if getattr(info, "_is_text_encoding", True) else None


class TargetLine(NamedTuple):
    """A decoded target payload."""

    levelno: int
    created: float
    spec: bytes  # as sent: the master's key for the sink
    text: str


def _stream_name(stream: object) -> Optional[str]:
    for name in STREAMS:
        if stream is getattr(sys, name, None) or stream is getattr(sys, f"__{name}__", None):
            return name
    try:
        fd = stream.fileno()  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - not a real stream: not a standard one
        return None
    return {1: "stdout", 2: "stderr"}.get(fd) if isinstance(fd, int) else None


def spec_of(handler: logging.Handler) -> Optional[TargetSpec]:
    """The target of a handler whose I/O the master can do, or None to leave it where it is.

    A local file (``FileHandler``, ``RotatingFileHandler``,
    ``TimedRotatingFileHandler``, ``WatchedFileHandler``, forklog's
    ``RotatingFileSink``) or a ``StreamHandler`` on stdout or stderr, whose
    class writes with the stdlib's own methods (a subclass that only sets
    defaults qualifies; one that overrides ``emit`` does not).
    """
    if isinstance(handler, logging.FileHandler):
        return _file_spec(handler)
    if isinstance(handler, logging.StreamHandler) and type(handler).emit is logging.StreamHandler.emit:
        name = _stream_name(handler.stream)
        return TargetSpec("stream", name) if name is not None else None
    return None


def _file_spec(handler: logging.FileHandler) -> Optional[TargetSpec]:
    encoding, errors = handler.encoding, getattr(handler, "errors", None)
    kind = _file_kind(handler)
    if (
        kind is None
        or not isinstance(encoding, (str, type(None)))
        or not isinstance(errors, (str, type(None)))
        or not handler.mode.startswith(("a", "w"))
    ):
        return None
    spec = TargetSpec(
        kind, handler.baseFilename, "w" if handler.mode.startswith("w") else "a", encoding, errors
    )
    if kind == "rotating":
        return spec._replace(max_bytes=handler.maxBytes, backup_count=handler.backupCount)  # type: ignore[attr-defined]
    if kind == "timed":
        timed: Any = handler
        at = timed.atTime
        return spec._replace(
            backup_count=timed.backupCount,
            when=str(timed.when).lower(),
            interval=_timed_interval(handler),
            utc=bool(timed.utc),
            at_time=at.hour * 3600 + at.minute * 60 + at.second if isinstance(at, datetime.time) else None,
        )
    return spec


def _file_kind(handler: logging.FileHandler) -> Optional[str]:
    """Which kind of file target ``handler`` is; None when its class does its own I/O."""
    if type(handler).__dict__.get("forklog_own_file_sink"):  # forklog.RotatingFileSink itself
        # forklog's own time rotation and gzip are left as the app made them.
        own: Any = handler
        return "rotating" if own.when is None and not own.compress else None
    return file_kind_of_class(type(handler))


def file_kind_of_class(cls: type) -> Optional[str]:
    """Which kind of file target a handler of class ``cls`` is; None when the class does its own I/O."""
    h = logging.handlers
    kinds: Tuple[Tuple[str, type, Tuple[str, ...]], ...] = (
        ("timed", h.TimedRotatingFileHandler, ("emit", "shouldRollover", "doRollover", "_open")),
        ("rotating", h.RotatingFileHandler, ("emit", "shouldRollover", "doRollover", "_open")),
        ("watched", h.WatchedFileHandler, ("emit", "_open", "reopenIfNeeded")),
        ("file", logging.FileHandler, ("emit", "_open")),
    )
    for kind, base, methods in kinds:
        if issubclass(cls, base):
            return kind if all(getattr(cls, name, None) is getattr(base, name) for name in methods) else None
    return None


def _timed_interval(handler: logging.Handler) -> int:
    """TimedRotatingFileHandler keeps its interval in seconds: the number the app gave back."""
    seconds = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "midnight": 86_400}
    when = str(handler.when).lower()  # type: ignore[attr-defined]
    unit = 7 * 86_400 if when.startswith("w") else seconds.get(when, 1)
    return max(1, int(handler.interval) // unit)  # type: ignore[attr-defined]


def encode(spec: bytes, levelno: int, created: float, text: str) -> bytes:
    """A target payload. Raises on a level or time that is not a number (the caller counts it)."""
    return _HEAD.pack(TARGET, levelno, created, len(spec)) + spec + text.encode("utf-8", "surrogatepass")


def decode(payload: bytes) -> TargetLine:
    """Read a target payload. Raises ``ValueError``."""
    try:
        _marker, levelno, created, size = _HEAD.unpack_from(payload)
        start = _HEAD.size
        if size > len(payload) - start:
            raise ValueError("target payload of an unknown shape")
        text = payload[start + size :].decode("utf-8", "surrogatepass")
    except (struct.error, UnicodeDecodeError) as exc:
        raise ValueError(f"undecodable target payload: {exc}") from None
    if not valid_time(created):
        raise ValueError("target payload with a time out of range")
    return TargetLine(levelno, created, payload[start : start + size], text)
