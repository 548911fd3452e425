"""A writer's table: how many records it has numbered, and whether it left by forklog's exit path.

A SIGKILLed process cannot say what it dropped or was about to send. Its
pipe tells the master what *arrived*; this table tells it what was *sent*:
the writer publishes the number of records it has numbered so far (each
record takes the next number before it is written, dropped or not). When
its pipe ends, the master compares that number with what arrived and what
the writer reported as dropped; the difference is reported as lost, never
silently.

Each writer makes a one-slot table of its own (a ``memfd``) and hands it to
the master with its pipe (:mod:`forklog._wire.registration`): no worker can
write another's, so a worker can lie about itself only (issue 21, item 7).
The owner keeps a table too, for one word every writer reads: whether the
master wants each record's fields (see ``fields_wanted``).

A slot is ``pid, boot, numbered, left`` (u32, u32, u64, u64). ``left`` is
the *exit mark*: the writer sets it when it leaves through forklog's exit
path (``Channel.leave``: gunicorn's ``worker_exit``, a pool child's
finalizer), so the master can tell a writer that exited from one that was
killed or crashed. A writer sets it about itself, so it is a label, never
evidence: the accounting does not depend on it. Slots are read and written
with ``pread``/``pwrite``. A writer publishes only when it matters (a record
dropped, or a record of several frames begun), so a log call pays no extra
system call.
"""

from __future__ import annotations

import contextlib
import os
import struct
import tempfile
from typing import Dict, List, Optional, Tuple

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
        self.fd = fd

    # -- the owner ------------------------------------------------------------

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
