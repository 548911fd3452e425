"""The master's side of the pipe: bytes read from it back into whole records."""

from __future__ import annotations

import time
import zlib
from typing import Dict, List, NamedTuple, Optional, Set, Tuple

from forklog import _bounded
from forklog._wire.framing import (
    _CHECKED_FROM,
    _MAGIC,
    _VERSION,
    _WHOLE_HEAD,
    CONTROL,
    FIRST,
    HEADER_SIZE,
    LAST,
    MAX_PAYLOAD,
)

__all__ = ["FrameReader"]


class _Partial(NamedTuple):
    """A record of several frames, its first arrived at ``started`` (monotonic)."""

    started: float
    parts: List[bytes]


class FrameReader:
    """Turns the bytes read from the pipe into whole records.

    Skips and counts anything that is not a well-formed frame; puts large
    records back together; gives up (and counts) on a record whose writer
    stopped sending fragments, and bounds the memory such records can hold.
    """

    def __init__(self, partial_timeout: float = 10.0, max_partial_bytes: int = 64 << 20) -> None:
        self._buffer = bytearray()
        #: Records of several frames being put together, by (pid, boot, sequence number).
        self._partial: Dict[Tuple[int, int, int], _Partial] = {}
        self._partial_bytes = 0
        self.partial_timeout = partial_timeout
        self.max_partial_bytes = max_partial_bytes
        self.garbage_bytes = 0
        self.bad_frames = 0
        self.abandoned_records: Dict[int, int] = {}  # by pid
        #: Whole CONTROL records returned so far (a reader of records only need not look at each).
        self.control_frames = 0

    def feed(self, data: bytes) -> List[Tuple[int, int, int, int, bytes]]:
        """``(flags, pid, boot, seq, payload)`` of each whole record in ``data``, in order."""
        buf = self._buffer
        buf += data
        out: List[Tuple[int, int, int, int, bytes]] = []
        append = out.append
        pos = 0
        end = len(buf)
        unpack = _WHOLE_HEAD.unpack_from
        checked_from = _CHECKED_FROM
        crc32 = zlib.crc32
        view = memoryview(buf)  # slices without copies; released before buf is resized
        try:
            while end - pos >= HEADER_SIZE:
                magic, crc, flags, version, length, pid, boot, seq, index = unpack(buf, pos)
                if magic != _MAGIC:
                    found = buf.find(_MAGIC, pos + 1)
                    skip_to = found if found >= 0 else end - 1
                    self.garbage_bytes += skip_to - pos
                    pos = skip_to
                    continue
                if version != _VERSION or length > MAX_PAYLOAD:
                    self.garbage_bytes += 1
                    self.bad_frames += 1
                    pos += 1
                    continue
                frame_end = pos + HEADER_SIZE + length
                if frame_end > end:
                    break  # the rest of this frame has not been read yet
                if crc32(view[pos + checked_from : frame_end]) != crc:
                    self.garbage_bytes += 1
                    self.bad_frames += 1
                    pos += 1
                    continue
                payload = view[pos + HEADER_SIZE : frame_end].tobytes()
                pos = frame_end
                if flags & FIRST and flags & LAST:
                    append((flags, pid, boot, seq, payload))
                else:
                    whole = self._assemble(flags, (pid, boot, seq), index, payload)
                    if whole is None:
                        continue
                    append((flags, pid, boot, seq, whole))
                if flags & CONTROL:
                    self.control_frames += 1
        finally:
            view.release()
        del buf[:pos]
        return out

    def _assemble(self, flags: int, key: Tuple[int, int, int], index: int, payload: bytes) -> Optional[bytes]:
        if flags & FIRST:
            if key in self._partial:
                self._abandon(key)
            self._partial[key] = _Partial(time.monotonic(), [payload])
            self._partial_bytes += len(payload)
            self._bound()
            return None
        entry = self._partial.get(key)
        if entry is None or len(entry.parts) != index:
            self.bad_frames += 1  # a fragment without its beginning
            if entry is not None:
                self._abandon(key)
            return None
        entry.parts.append(payload)
        self._partial_bytes += len(payload)
        if flags & LAST:
            del self._partial[key]
            whole = b"".join(entry.parts)
            self._partial_bytes -= len(whole)
            return whole
        self._bound()
        return None

    def _bound(self) -> None:
        while self._partial_bytes > self.max_partial_bytes and self._partial:
            oldest = min(self._partial, key=lambda k: self._partial[k].started)
            self._abandon(oldest)

    def _abandon(self, key: Tuple[int, int, int]) -> None:
        _started, parts = self._partial.pop(key)
        self._partial_bytes -= sum(len(part) for part in parts)
        pid, _boot, _seq = key
        _bounded.add(self.abandoned_records, pid, 1, _bounded.by_pid)

    def expire(
        self, now: Optional[float] = None, pid: Optional[int] = None, boots: Optional[Set[int]] = None
    ) -> None:
        """Give up on partial records older than the timeout, or on ``pid``'s (of ``boots`` if given)."""
        now = time.monotonic() if now is None else now
        for key, (started, _parts) in list(self._partial.items()):
            writer, boot, _seq = key
            mine = writer == pid and (not boots or boot in boots)
            if mine or now - started > self.partial_timeout:
                self._abandon(key)

    @property
    def pending_partial(self) -> int:
        return len(self._partial)
