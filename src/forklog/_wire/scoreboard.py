"""A shared-memory scoreboard: how many records each writer has numbered.

A SIGKILLed process cannot say what it dropped or was about to send. The
pipe tells the master what *arrived*; this table tells it what was *sent*:
every writer has a slot, in memory shared with the master, where it
publishes the number of records it has numbered so far (each record takes
the next number before it is written, dropped or not). When the writer is
gone, the master compares that number with what arrived and what the writer
reported as dropped; the difference is reported as lost, never silently.

Slots are handed out by the owner only (a cross-process allocator would need
a lock a SIGKILL could wedge): at ``fork()`` in the owner's ``before`` hook,
and when the channel is pickled for a spawn or forkserver child. A process
forked by a worker (not by the owner) has no slot; its losses are still
counted from the numbers that arrive, but drops it never got to report
cannot be. The table lives in a ``memfd``, so spawn and forkserver children
map the same memory through a passed descriptor.

Each slot is ``pid, boot, numbered, left`` (u32, u32, u64, u64). Only its
writer changes ``numbered`` and ``left``; the owner reads them once the
writer is gone, so no lock is needed. ``left`` is the *exit mark*: the
writer sets it when it leaves through forklog's exit path
(``Channel.leave``: gunicorn's ``worker_exit``, a pool child's finalizer),
so the master can tell a writer that exited from one that was killed or
crashed. A writer sets it about itself, so it is a label, never evidence:
the accounting does not depend on it. Slots are read and written with ``pread``/``pwrite``, not
through a shared ``mmap`` (both are coherent on Linux). An earlier note
blamed "stores invisible to the parent" on some virtual machines; the cause
found since is the owner's: settling a dead writer freed every slot claimed
under its pid, a slot a new process with the same pid had just claimed
included, so that process's counts vanished. Exit markers now name the dead
incarnations (``Listener.exited``). That it explains every case once seen
is not proven. A writer publishes only when it matters (a record dropped, or a
record of several frames begun), so a log call pays no extra system call.
"""

from __future__ import annotations

import collections
import contextlib
import os
import struct
import tempfile
import threading
from typing import Deque, Dict, List, Optional, Tuple

__all__ = ["Scoreboard"]

_SLOT = struct.Struct("<IIQQ")
_NUMBERED = struct.Struct("<Q")
_NUMBERED_OFFSET = 8
_LEFT = struct.Struct("<Q")
_LEFT_OFFSET = 16
#: After the slots: one word the owner sets for every writer to read (see fields_wanted).
_FLAG = struct.Struct("<Q")


class Scoreboard:
    """The table. The owner creates it; children attach to it."""

    def __init__(self, slots: int = 4096, fd: Optional[int] = None) -> None:
        self.slots = slots
        if fd is None:
            fd = _anonymous_file()
            os.ftruncate(fd, slots * _SLOT.size + _FLAG.size)
            os.pwrite(fd, _FLAG.pack(1), slots * _SLOT.size)
            self._free: Deque[int] = collections.deque(range(slots))
        else:
            self._free = collections.deque()
        self.fd = fd
        self._lock = threading.Lock()

    # -- the owner ------------------------------------------------------------

    def reserve(self) -> int:
        """A free slot for a child about to be created, or -1 if none is left."""
        with self._lock:
            return self._free.popleft() if self._free else -1

    def release(self, index: int) -> None:
        with self._lock:
            os.pwrite(self.fd, _SLOT.pack(0, 0, 0, 0), index * _SLOT.size)
            self._free.append(index)

    def claimed(self) -> Dict[int, List[Tuple[int, int, int]]]:
        """pid -> [(slot, boot, numbered)] for every slot a writer has claimed."""
        return {
            pid: [(index, boot, numbered) for index, boot, numbered, _left in slots]
            for pid, slots in self.entries().items()
        }

    def entries(self) -> Dict[int, List[Tuple[int, int, int, bool]]]:
        """pid -> [(slot, boot, numbered, left)]: :meth:`claimed` with each slot's exit mark.

        Every writer can write the table, and resize it: whatever its size or
        content, this never raises for it. A table cut short (a worker
        truncated it) is read as far as it goes and given back its size.
        """
        size = self.slots * _SLOT.size
        table = os.pread(self.fd, size, 0)
        if len(table) < size:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, size + _FLAG.size)
            table = table[: len(table) - len(table) % _SLOT.size]
        out: Dict[int, List[Tuple[int, int, int, bool]]] = {}
        for index, (pid, boot, numbered, left) in enumerate(_SLOT.iter_unpack(table)):
            if pid:
                out.setdefault(pid, []).append((index, boot, numbered, left != 0))
        return out

    def want_fields(self, wanted: bool) -> None:
        """Tell the writers whether the master's buffered sinks take records now (see Channel)."""
        with contextlib.suppress(OSError):
            os.pwrite(self.fd, _FLAG.pack(1 if wanted else 0), self.slots * _SLOT.size)

    # -- a writer -------------------------------------------------------------

    def fields_wanted(self) -> bool:
        """Whether the master wants each record's fields besides its lines (True if unsure)."""
        try:
            data = os.pread(self.fd, _FLAG.size, self.slots * _SLOT.size)
        except OSError:
            return True
        return len(data) != _FLAG.size or _FLAG.unpack(data)[0] != 0

    def claim(self, index: int, pid: int, boot: int) -> None:
        os.pwrite(self.fd, _SLOT.pack(pid, boot, 0, 0), index * _SLOT.size)

    def publish(self, index: int, numbered: int) -> None:
        os.pwrite(self.fd, _NUMBERED.pack(numbered), index * _SLOT.size + _NUMBERED_OFFSET)

    def mark_left(self, index: int) -> None:
        """The exit mark: this writer leaves through forklog's exit path (see the module's notes)."""
        os.pwrite(self.fd, _LEFT.pack(1), index * _SLOT.size + _LEFT_OFFSET)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


def _anonymous_file() -> int:
    """A file with no name, for the table: a ``memfd`` on Linux, an unlinked temporary file elsewhere.

    ``FORKLOG_PORTABLE=1`` takes the second on Linux too (CI runs the suite
    once that way). Either is shared by every child through its descriptor.
    """
    if hasattr(os, "memfd_create") and os.environ.get("FORKLOG_PORTABLE") != "1":
        return int(os.memfd_create("forklog-scoreboard", os.MFD_CLOEXEC))
    fd, path = tempfile.mkstemp(prefix="forklog-scoreboard-")
    os.unlink(path)
    os.set_inheritable(fd, False)
    return fd
