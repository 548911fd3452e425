"""A writer's drop counters, safe against a log call inside a log call, and its exit path.

What a process dropped while the pipe was full is counted here, by level,
and sent as one control frame when the pipe takes records again (DESIGN H4).
The number of records a process has numbered is published in the
scoreboard from here too, so the master can tell a loss from a drop.

The counters need a critical section, and a plain lock cannot give one:

* a log call can run inside another one on the same thread (a signal
  handler that logs, run between two bytecodes of the interrupted call); a
  ``Lock`` would deadlock there, an ``RLock`` lets the handler in but in the
  middle of the interrupted update. So a section that finds its own thread
  already inside one leaves its update in ``_deferred`` (a list append is
  atomic), and the interrupted section applies it before it lets go;
* a daemon thread frozen by the interpreter's exit holds the lock for good;
  the live threads then go on under a lock of their own (``_stuck_section``)
  rather than hang the exit.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from typing import TYPE_CHECKING, Dict, Iterator, List, Optional, Tuple

from forklog._wire.framing import wait_writable
from forklog._wire.text import safe_repr

if TYPE_CHECKING:
    from forklog._wire.scoreboard import Scoreboard

__all__ = ["DropCounters", "level_key"]

#: The longest a critical section over the drop counters waits for another
#: thread. Sections last microseconds; see DropCounters._enter.
_LOCK_WAIT = 0.5


class DropCounters:
    """The drop counters of :class:`~forklog._worker.channel.Channel` and their sections."""

    #: This writer's own slot's table (forklog._wire.registration), slot 0; None in the owner.
    board: Optional[Scoreboard]
    _slot: int
    write_fd: int
    pid: int

    def _send_drops(self, counts: Dict[str, int]) -> bool:
        raise NotImplementedError  # the channel sends them

    def _reset_drop_counters(self) -> None:
        """Fresh counters: at the channel's creation, and in a forked child."""
        # Guards the drop counters and the published number (cold path), see _enter().
        self._lock = threading.RLock()
        # Serialises the live threads while _lock is held for good by a frozen one (see _stuck_section).
        self._stuck_lock = threading.Lock()
        self._busy = False
        self._stuck = False
        self._deferred: List[Tuple[str, int]] = []
        self._dropped: Dict[str, int] = {}
        self._dropped_total = 0
        self._published = 0

    @property
    def dropped(self) -> Dict[str, int]:
        """Records this process dropped and has not yet reported, by level name."""
        state = self._enter()
        try:
            return dict(self._dropped)
        finally:
            if state:
                self._leave()

    def _enter(self) -> Optional[bool]:
        """Begin a critical section over the counters.

        ``True``: inside it, end it with :meth:`_leave`. ``None``: this thread
        is already inside one (a signal handler interrupted it): defer the
        update. ``False``: another thread has held the lock far longer than
        any section lasts, which only a thread frozen by interpreter exit
        does (a daemon thread stops where it stands and never releases it):
        go on without the lock rather than hang the exit.
        """
        lock = self._lock
        if not lock.acquire(False) and (self._stuck or not lock.acquire(True, _LOCK_WAIT)):
            self._stuck = True  # don't wait again until the lock is seen free
            return False
        if self._stuck:
            self._stuck = False
        if self._busy:
            lock.release()
            return None
        self._busy = True
        return True

    def _leave(self) -> None:
        deferred = self._deferred
        while True:
            while deferred:
                self._apply(*deferred.pop(0))
            self._busy = False
            # A signal from here on finds the section free and goes ahead
            # itself; one that came before the flag was cleared deferred.
            if not deferred:
                break
            self._busy = True
        self._lock.release()

    def _apply(self, levelname: str, count: int) -> None:
        """One update, inside a section: a drop count, or (no level name) a number to publish."""
        if levelname:
            self._dropped[levelname] = self._dropped.get(levelname, 0) + count
            self._dropped_total += count
        elif count > self._published:
            board = self.board
            if self._slot >= 0 and board is not None:
                self._published = count
                with contextlib.suppress(OSError):
                    board.publish(self._slot, count)

    def _update(self, levelname: str, count: int) -> None:
        state = self._enter()
        if state:
            try:
                self._apply(levelname, count)
            finally:
                self._leave()
        elif state is None:
            self._deferred.append((levelname, count))
        else:
            with self._stuck_section():
                self._apply(levelname, count)

    @contextlib.contextmanager
    def _stuck_section(self) -> Iterator[None]:
        """A section while ``_lock`` is held for good (a thread frozen at exit, see _enter).

        The live threads then take a lock of their own, so two of them never
        update a count at once and lose one of the two; bounded like _enter.
        """
        got = self._stuck_lock.acquire(True, _LOCK_WAIT)
        try:
            yield
        finally:
            if got:
                self._stuck_lock.release()

    def _publish(self, numbered: int) -> None:
        """Tell the scoreboard how many records this process has numbered.

        Only needed for what no later frame will reveal: records dropped,
        and records of several frames that a kill could cut short.
        """
        # _published only grows: read outside the section, it can only be too low.
        if self._slot >= 0 and numbered > self._published:
            self._update("", numbered)

    def _count_drop(self, levelname: str) -> None:
        if type(levelname) is not str or not levelname:
            levelname = level_key(levelname)
        state = self._enter()
        if state:
            try:
                dropped = self._dropped
                dropped[levelname] = dropped.get(levelname, 0) + 1
                self._dropped_total += 1
            finally:
                self._leave()
        elif state is None:
            self._deferred.append((levelname, 1))
        else:
            with self._stuck_section():
                self._apply(levelname, 1)

    def _send_drop_summary(self) -> bool:
        """Send the drop counts as one record; False if this thread is inside a section."""
        state = self._enter()
        if state is None:
            return False  # a signal handler: the next record that goes out reports them
        if state:
            try:
                counts, self._dropped, self._dropped_total = self._dropped, {}, 0
            finally:
                self._leave()
        else:
            with self._stuck_section():
                counts, self._dropped, self._dropped_total = self._dropped, {}, 0
        if counts and not self._send_drops(counts):
            for name, count in counts.items():  # still full: keep counting, report later
                self._update(name, count)
        return True

    # -- at the exit: the last report, the exit mark --------------------------

    def flush(self, timeout: float = 1.0) -> bool:
        """Send the pending drop summary, waiting up to ``timeout``; True if none is left.

        Run at a worker's exit (gunicorn ``worker_exit``, a pool child's
        finalizer) so drops at the very end are reported too.
        """
        deadline = time.monotonic() + timeout
        while True:
            if self._dropped_total and not self._send_drop_summary():
                return False  # called by a signal handler inside a section: cannot wait for it
            if not self._dropped_total:
                return True
            if time.monotonic() >= deadline:
                return False
            wait_writable(self.write_fd, min(0.05, deadline - time.monotonic()))

    def leave(self, timeout: float = 1.0) -> bool:
        """forklog's exit path: :meth:`flush`, then the exit mark in this writer's scoreboard slot.

        The mark lets the master say "exited", not "killed", of a writer that
        left with records unaccounted for (see forklog._wire.scoreboard).
        gunicorn's ``worker_exit`` and a pool child's finalizer call this.
        True if no drop is left unreported.
        """
        flushed = self.flush(timeout)
        board = self.board
        if self._slot >= 0 and board is not None and self.pid == os.getpid():
            with contextlib.suppress(OSError):
                board.mark_left(self._slot)
        return flushed


def level_key(levelname: object) -> str:
    """A drop counter's key: a plain, non-empty string (the summary sorts and carries the keys)."""
    if isinstance(levelname, str) and levelname:
        return str.__str__(levelname)
    return "UNKNOWN" if not levelname else safe_repr(levelname)
