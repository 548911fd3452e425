"""The frame format of the pipe between the emitting processes and the master, and the pipe itself.

Both sides use it: :class:`forklog._worker.channel.Channel` writes frames,
:class:`forklog._master.frame_reader.FrameReader` reads them. A frame is at most
``PIPE_BUF`` bytes, written with one ``write()`` (atomic for a pipe)::

    magic (2) | CRC32 of the rest (4) | flags, version, payload length,
    pid, boot, record sequence, fragment index | payload

"boot" is random per process incarnation: a reused pid is another writer.
Drop counts travel as control frames (``DROPS_MARK``) an application record
can never pass for (H27).

Versions: every version of the frame keeps the magic, the CRC of everything
after it, the flags, the version, the payload length and the pid where they
are, and the header's size. A hub that reads a frame of another version with
a good CRC can then name its writer, skip it whole and count it (issue 21,
item 12): "pid P speaks wire vN, this hub vM" once per pid on stderr,
``HubStats.foreign_by_process`` and ``foreign_bytes``. A version that must
change that start changes the magic instead.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import struct
import termios
import zlib
from typing import Dict, List, Tuple

__all__ = [
    "CONTROL",
    "DROPS_MARK",
    "FIRST",
    "HEADER_SIZE",
    "LAST",
    "MAX_PAYLOAD",
    "MIN_FRAGMENT",
    "NO_SEQ",
    "PIPE_BUF",
    "PIPE_SIZES",
    "WRITER_PIPE_SIZES",
    "decode_drops",
    "encode_drops",
    "frames",
    "grow_pipe",
    "pipe_backlog",
    "close_fds",
    "pipe_capacity",
    "wait_writable",
    "writable",
]


def _pipe_buf() -> int:
    """The platform's atomic pipe write size (4096 on Linux, 512 on macOS and the BSDs).

    ``FORKLOG_PORTABLE=1`` takes POSIX's minimum, 512, as macOS has it: the
    suite runs once that way in CI, so frames that only Linux's size keeps
    whole cannot go unnoticed.
    """
    if os.environ.get("FORKLOG_PORTABLE") == "1":
        return 512
    return int(getattr(select, "PIPE_BUF", 512))


PIPE_BUF = _pipe_buf()
_MAGIC = b"\xf0\x1c"
# A frame: magic, CRC32 of everything after it, then flags, version, payload
# length, pid, boot, record sequence, fragment index, and the payload.
# "boot" is random per process incarnation: a reused pid is another writer.
_HEAD = struct.Struct("<BBHIIII")  # what follows the magic and the CRC
_CRC = struct.Struct("<I")
_CHECKED_FROM = len(_MAGIC) + _CRC.size
HEADER_SIZE = _CHECKED_FROM + _HEAD.size
_WHOLE_HEAD = struct.Struct("<2sIBBHIIII")  # the whole header, read at once
MAX_PAYLOAD = PIPE_BUF - HEADER_SIZE
#: The frame format's version (see the module's note on versions). 4: a record's
#: fields travel in a fixed layout (FORMAT_VERSION 5). 3: a traceback's frames carry
#: their source lines. A writer of another version is named once, not decoded wrongly.
_VERSION = 4
#: The smallest payload of a frame that is not a record's last: POSIX's PIPE_BUF
#: (512, the portable size) less the header. A record of ``n`` bytes has at most
#: ``n // MIN_FRAGMENT + 1`` frames, whatever the writer's platform.
MIN_FRAGMENT = 512 - HEADER_SIZE

FIRST = 0x01
LAST = 0x02
CONTROL = 0x04  # a message for the reader itself (the stop marker), not a record
NO_SEQ = 0xFFFFFFFF  # the sequence number of a frame that is not a numbered record

_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_F_GETPIPE_SZ = getattr(fcntl, "F_GETPIPE_SZ", 1032)


def frames(flags: int, pid: int, boot: int, seq: int, payload: bytes) -> List[bytes]:
    """Cut ``payload`` into frames of at most ``PIPE_BUF`` bytes."""
    out = []
    size = len(payload)
    count = max(1, -(-size // MAX_PAYLOAD))
    for index in range(count):
        chunk = payload[index * MAX_PAYLOAD : (index + 1) * MAX_PAYLOAD]
        bits = flags
        if index == 0:
            bits |= FIRST
        if index == count - 1:
            bits |= LAST
        checked = _HEAD.pack(bits, _VERSION, len(chunk), pid, boot, seq & 0xFFFFFFFF, index) + chunk
        out.append(_MAGIC + _CRC.pack(zlib.crc32(checked)) + checked)
    return out


#: The start of a control frame that carries a writer's drop counts.
DROPS_MARK = b"drops"
#: At most this many level names in one drop report; the rest are added up under "other".
_MAX_DROP_KEYS = 64
_DROP = struct.Struct("<BI")  # a level name's length, its count


def encode_drops(counts: Dict[str, int]) -> bytes:
    """A drop report: the mark, then each level name (its length, UTF-8) and its count; one frame."""
    if len(counts) > _MAX_DROP_KEYS:
        kept = dict(sorted(counts.items(), key=lambda item: -item[1])[: _MAX_DROP_KEYS - 1])
        kept["other"] = kept.get("other", 0) + sum(v for k, v in counts.items() if k not in kept)
        counts = kept
    parts = [DROPS_MARK]
    for name, count in counts.items():
        data = name.encode("utf-8", "backslashreplace")[:48]
        parts.append(_DROP.pack(len(data), min(count, 0xFFFFFFFF)) + data)
    return b"".join(parts)


def decode_drops(payload: bytes) -> Dict[str, int]:
    """The counts of a drop report, read field by field (never ``marshal``). Raises ``ValueError``."""
    counts: Dict[str, int] = {}
    position = len(DROPS_MARK)
    try:
        while position < len(payload):
            size, count = _DROP.unpack_from(payload, position)
            position += _DROP.size
            if position + size > len(payload) or len(counts) >= _MAX_DROP_KEYS:
                raise ValueError("a drop report of an unknown shape")
            name = payload[position : position + size].decode("utf-8")
            position += size
            counts[name] = counts.get(name, 0) + count
    except (struct.error, UnicodeDecodeError) as exc:
        raise ValueError(f"undecodable drop report: {exc}") from None
    return counts


#: The pipe sizes a channel asks for, largest first. The pipe is what
#: absorbs the master's stalls at full load: while gunicorn forks workers at a
#: HUP, the receiver can wait 20 to 40 ms for the GIL and a CPU, and four
#: sync workers logging 6 KB a request fill 1 MiB in about 70 ms. Linux grants
#: 4 MiB to root (a gunicorn master usually is) or under a raised
#: ``fs.pipe-max-size``, and 1 MiB to any user by default.
PIPE_SIZES = (4 << 20, 1 << 20)
#: A writer's own pipe (each process that logs has one, forklog._wire.registration):
#: 1 MiB, Linux's most for any user by default, so a burst of one writer
#: fits as it did in the one shared pipe; 256 KiB past the user's pipe budget.
WRITER_PIPE_SIZES = (1 << 20, 256 << 10)


def grow_pipe(fd: int, sizes: Tuple[int, ...]) -> None:
    """Give the pipe the first size the kernel grants; none granted, its default (64 KiB) stays."""
    for size in sizes:
        try:
            fcntl.fcntl(fd, _F_SETPIPE_SZ, size)
            return
        except OSError:
            continue


def pipe_backlog(fd: int) -> int:
    """Bytes waiting in the pipe (FIONREAD), 0 if unknown."""
    try:
        buf = fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0")
    except OSError:
        return 0
    return int(struct.unpack("i", buf)[0])


def pipe_capacity(fd: int) -> int:
    """The pipe's size in bytes (F_GETPIPE_SZ); Linux's default of 64 KiB if unknown."""
    try:
        return int(fcntl.fcntl(fd, _F_GETPIPE_SZ))
    except OSError:
        return 64 << 10


_poll = select.poll  # bound at import: gevent's monkey-patching removes select.poll


def writable(fd: int) -> bool:
    """Whether the pipe has room for a frame now (POLLOUT: at least PIPE_BUF bytes free)."""
    poller = _poll()
    poller.register(fd, select.POLLOUT)
    try:
        return bool(poller.poll(0))
    except InterruptedError:
        return False


def wait_writable(fd: int, timeout: float) -> None:
    """Wait until the pipe has room for a frame, at most ``timeout`` seconds (at least 1 ms)."""
    poller = _poll()
    poller.register(fd, select.POLLOUT)
    with contextlib.suppress(InterruptedError):
        poller.poll(max(0, int(timeout * 1000)) or 1)


def close_fds(*fds: int) -> None:
    for fd in fds:
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)
