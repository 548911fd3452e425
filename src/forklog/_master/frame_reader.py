"""The master's side of the pipe: bytes read from it back into whole records."""

from __future__ import annotations

import time
import zlib
from typing import Any, Dict, List, Optional, Set, Tuple

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
    MIN_FRAGMENT,
)

__all__ = ["FrameReader"]


#: At most this many records of several frames are put together at once;
#: past it (or past ``max_partial_bytes``) the oldest is abandoned, counted in
#: ``abandoned_records`` and ``refused["partial_records"]``. A writer has one
#: such record in flight per thread that logs; a worker forging keys (many
#: zero-byte first fragments) cannot make the table grow past it.
MAX_PARTIAL_RECORDS = 4096
#: What a fragment holds in memory besides its payload (the bytes object, its
#: place in the list): counted in ``max_partial_bytes``, so that empty fragments
#: are not free.
FRAGMENT_OVERHEAD = 64
#: Writers of another wire version remembered as told (see ``foreign_news``).
MAX_FOREIGN_PIDS = 1024
#: At most this many writers of another version waiting to be told, between two reads.
_MAX_NEWS = 64


class _Partial:
    """A record of several frames, its first arrived at ``started`` (monotonic)."""

    __slots__ = ("parts", "size", "started")

    def __init__(self, started: float, first: bytes) -> None:
        self.started = started
        self.parts = [first]
        #: Its payload's bytes so far.
        self.size = len(first)


class FrameReader:
    """Turns the bytes read from the pipe into whole records.

    Skips and counts anything that is not a well-formed frame; puts large
    records back together; gives up (and counts) on a record whose writer
    stopped sending fragments, and bounds the memory such records can hold:
    at most ``MAX_PARTIAL_RECORDS`` of them and ``max_partial_bytes`` in all,
    none past ``max_record_bytes`` (the limit the workers apply, enforced here
    too: a record sent raw past it is abandoned, its fragments freed). A frame
    of another wire version is skipped whole and counted by the pid it names
    (``foreign_by_process``); the receiver says it once per pid.
    """

    def __init__(
        self,
        partial_timeout: float = 10.0,
        max_partial_bytes: int = 64 << 20,
        max_record_bytes: int = 1 << 20,
        max_partial_records: int = MAX_PARTIAL_RECORDS,
    ) -> None:
        self._buffer = bytearray()
        #: Records of several frames being put together, by (pid, boot, sequence
        #: number), oldest first (each is inserted at its first frame).
        self._partial: Dict[Tuple[int, int, int], _Partial] = {}
        self._partial_bytes = 0
        self.partial_timeout = partial_timeout
        self.max_partial_bytes = max_partial_bytes
        self.max_partial_records = max_partial_records
        self.max_record_bytes = max_record_bytes
        #: The most frames a record of ``max_record_bytes`` can have.
        self.max_fragments = max_record_bytes // MIN_FRAGMENT + 1
        self.garbage_bytes = 0
        self.bad_frames = 0
        self.abandoned_records: Dict[int, int] = {}  # by pid
        #: Whole CONTROL records returned so far (a reader of records only need not look at each).
        self.control_frames = 0
        #: Records refused by a bound, by bound: "partial_records" (abandoned to keep
        #: the table within its entries or bytes), "max_record_bytes" (longer than that,
        #: or in more frames than such a record has). Each is in abandoned_records too.
        self.refused: Dict[str, int] = {}
        #: The sum of ``refused``: the receiver looks at it after each read.
        self.refusals = 0
        #: Frames of another wire version, skipped whole, by the pid they name.
        self.foreign_by_process: Dict[int, int] = {}
        self.foreign_frames = 0
        self.foreign_bytes = 0
        #: Writers of another version not told of yet: pid -> version (see told()).
        self.foreign_news: Dict[int, int] = {}
        self._told: Dict[int, int] = {}

    def feed(self, data: bytes, source: Optional[Any] = None) -> List[Tuple[int, int, int, int, bytes]]:
        """``(flags, pid, boot, seq, payload)`` of each whole record in ``data``, in order.

        ``source``: the pipe ``data`` came from (:class:`forklog._master.sources.Source`),
        its bytes kept apart from the other pipes'; its writer's pid and boot,
        which the kernel named, replace what each frame's header claims.
        """
        buf = self._buffer if source is None else source.buffer
        buf += data
        writer = None if source is None else (source.pid, source.boot)
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
                    # Another version's frame, whole in what was read, its CRC good: its
                    # writer is named and it is skipped whole. Anything else is garbage,
                    # skipped at once (a false header waits for no more bytes).
                    frame_end = pos + HEADER_SIZE + length
                    if (
                        version != _VERSION
                        and length <= MAX_PAYLOAD
                        and frame_end <= end
                        and crc32(view[pos + checked_from : frame_end]) == crc
                    ):
                        self._foreign(pid if writer is None else writer[0], version, frame_end - pos)
                        pos = frame_end
                        continue
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
                if writer is not None:
                    pid, boot = writer
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

    def _foreign(self, pid: int, version: int, size: int) -> None:
        """A frame of another wire version from ``pid``: skipped whole, counted, its writer to be told."""
        self.foreign_frames += 1
        self.foreign_bytes += size
        _bounded.add(self.foreign_by_process, pid, 1, _bounded.by_pid)
        if self._told.get(pid) != version and len(self.foreign_news) < _MAX_NEWS:
            self.foreign_news[pid] = version

    def told(self, pid: int, version: int) -> None:
        """``pid`` was named as a writer of wire ``version``: not again (of the last MAX_FOREIGN_PIDS)."""
        told = self._told
        told.pop(pid, None)
        told[pid] = version
        if len(told) > MAX_FOREIGN_PIDS:
            del told[next(iter(told))]

    def _assemble(self, flags: int, key: Tuple[int, int, int], index: int, payload: bytes) -> Optional[bytes]:
        partial = self._partial
        if flags & FIRST:
            if key in partial:
                self._abandon(key)
            partial[key] = _Partial(time.monotonic(), payload)
            self._partial_bytes += len(payload) + FRAGMENT_OVERHEAD
            self._bound()
            return None
        entry = partial.get(key)
        if entry is None or len(entry.parts) != index:
            self.bad_frames += 1  # a fragment without its beginning
            if entry is not None:
                self._abandon(key)
            return None
        entry.parts.append(payload)
        entry.size += len(payload)
        self._partial_bytes += len(payload) + FRAGMENT_OVERHEAD
        if entry.size > self.max_record_bytes or index >= self.max_fragments:
            # Past the limit the workers apply: sent raw, by a writer that is not forklog's.
            self._abandon(key, "max_record_bytes")
            return None
        if flags & LAST:
            del partial[key]
            self._partial_bytes -= entry.size + len(entry.parts) * FRAGMENT_OVERHEAD
            return b"".join(entry.parts)
        self._bound()
        return None

    def _bound(self) -> None:
        partial = self._partial
        while partial and (
            self._partial_bytes > self.max_partial_bytes or len(partial) > self.max_partial_records
        ):
            self._abandon(next(iter(partial)), "partial_records")  # the oldest

    def _abandon(self, key: Tuple[int, int, int], refused: Optional[str] = None) -> None:
        entry = self._partial.pop(key)
        self._partial_bytes -= entry.size + len(entry.parts) * FRAGMENT_OVERHEAD
        pid, _boot, _seq = key
        _bounded.add(self.abandoned_records, pid, 1, _bounded.by_pid)
        if refused is not None:
            self.refused[refused] = self.refused.get(refused, 0) + 1
            self.refusals += 1

    def expire(
        self, now: Optional[float] = None, pid: Optional[int] = None, boots: Optional[Set[int]] = None
    ) -> None:
        """Give up on partial records older than the timeout, or on ``pid``'s (of ``boots`` if given)."""
        now = time.monotonic() if now is None else now
        for key, entry in list(self._partial.items()):
            writer, boot, _seq = key
            mine = writer == pid and (not boots or boot in boots)
            if mine or now - entry.started > self.partial_timeout:
                self._abandon(key)
            elif pid is None:
                break  # oldest first: the rest are younger still

    @property
    def pending_partial(self) -> int:
        return len(self._partial)
