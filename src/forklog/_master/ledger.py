"""Per-process accounting: which records each writer sent, and which never came.

Every record a process sends takes the next sequence number (transport),
whether it reaches the pipe or is dropped on a full pipe. When the process is
gone, the master knows how many numbers it used (the highest one seen, plus
one), how many records arrived, and how many drops the process reported in
its summary records. What is left was lost: a record cut short when its
writer was SIGKILLed between two fragments, or drops it never got to report.
The listener turns that into a ``forklog: lost N records from pid P`` record.

A record whose write had not started when its process was killed never
existed outside that process and cannot be counted.

The accounts are bounded (issue 21, item 11): at most ``MAX_ACCOUNTS`` open
at once and ``MAX_BOOTS_PER_PID`` per pid, so that a worker forging boots or
pids cannot grow the table. A record of a writer refused an account is
written all the same, counted in ``refused`` and, by pid, in ``unaccounted``
(which its settlement subtracts, so that it is not reported lost), and said
on stderr at a bounded rate.
"""

from __future__ import annotations

import os
from typing import Dict, List, Optional, Set, Tuple

from forklog import _bounded
from forklog._stderr import Reporter
from forklog._wire.framing import NO_SEQ

__all__ = ["MAX_ACCOUNTS", "MAX_BOOTS_PER_PID", "Ledger", "process_is_gone"]

#: At most this many writers' accounts open at once: a gunicorn master has
#: one per live worker (and pool child), settled when it is gone.
MAX_ACCOUNTS = 4096
#: At most this many incarnations (boots) of one pid with an account open: a
#: process has one; a reused pid, one more until the dead one is settled.
MAX_BOOTS_PER_PID = 16


class Account:
    """One writer's account (a pid in one incarnation, its boot)."""

    __slots__ = ("received", "reported", "used")

    def __init__(self) -> None:
        self.received = 0
        #: The highest sequence number seen, plus one: how many it numbered, as far as known.
        self.used = 0
        #: Drops the writer reported in its drop summaries.
        self.reported = 0

    @property
    def missing(self) -> int:
        return self.used - self.received - self.reported


class Ledger:
    def __init__(self, reporter: Optional[Reporter] = None) -> None:
        self._writers: Dict[Tuple[int, int], Account] = {}
        #: How many accounts each pid has open.
        self._boots: Dict[int, int] = {}
        self.lost_by_process: Dict[int, int] = {}
        self._reporter = reporter if reporter is not None else Reporter()
        #: Records (received, or reported dropped) of writers refused an account.
        self.refused = 0
        #: The same, by pid (bounded: the oldest pids fold into pid 0).
        self.unaccounted: Dict[int, int] = {}

    def _open(self, pid: int, boot: int, count: int) -> Optional[Account]:
        """A new account for (``pid``, ``boot``), or None past a bound (``count`` records refused)."""
        boots = self._boots.get(pid, 0)
        if len(self._writers) >= MAX_ACCOUNTS or boots >= MAX_BOOTS_PER_PID:
            self.refused += count
            _bounded.add(self.unaccounted, pid, count, _bounded.by_pid)
            self._reporter.report(
                "bound:accounts",
                f"records of pid {pid} (boot {boot:08x}) are written but not accounted: "
                f"{len(self._writers)} writers' accounts are open, {boots} of pid {pid} "
                f"(at most {MAX_ACCOUNTS}, {MAX_BOOTS_PER_PID} a pid); {self.refused} records so far",
            )
            return None
        self._boots[pid] = boots + 1
        account = self._writers[(pid, boot)] = Account()
        return account

    def received(self, pid: int, boot: int, seq: int) -> None:
        if seq == NO_SEQ:
            return  # a drop summary
        account = self._writers.get((pid, boot))
        if account is None:
            account = self._open(pid, boot, 1)
            if account is None:
                return
        account.received += 1
        if seq >= account.used:
            account.used = seq + 1

    def received_many(self, pid: int, boot: int, count: int, highest: int) -> None:
        """``count`` records of one writer, the highest sequence number among them ``highest``."""
        account = self._writers.get((pid, boot))
        if account is None:
            account = self._open(pid, boot, count)
            if account is None:
                return
        account.received += count
        if highest >= account.used:
            account.used = highest + 1

    def dropped(self, pid: int, boot: int, count: int) -> None:
        # A writer's first frame to arrive can be its drop summary.
        account = self._writers.get((pid, boot))
        if account is None:
            account = self._open(pid, boot, count)
            if account is None:
                return
        account.reported += count

    @property
    def size(self) -> int:
        """The accounts open."""
        return len(self._writers)

    def pids(self) -> List[int]:
        return sorted(self._boots)

    def boots(self, pid: int) -> List[int]:
        """The incarnations (boots) of ``pid`` with an account open."""
        if pid not in self._boots:
            return []
        return [boot for p, boot in list(self._writers) if p == pid]

    def close(
        self, pid: int, numbered: Optional[Dict[int, int]] = None, only: Optional[Set[int]] = None
    ) -> Optional[int]:
        """``pid`` is gone and all it wrote has been read: settle its account.

        ``numbered`` is what the scoreboard says each incarnation (boot) of
        ``pid`` numbered; it covers records dropped or cut short at the end,
        which no later record's number reveals. ``only``: settle just these
        incarnations (the one whose pipe ended; a new
        process may have the pid by now).
        """
        numbered = numbered or {}
        lost = 0
        boots = {boot for p, boot in self._writers if p == pid} | set(numbered)
        if only:
            boots &= only
        # Records that arrived, or were reported dropped, while the table was full.
        unaccounted = self.unaccounted.pop(pid, 0)
        if not boots:
            return None  # nothing known of it (already settled, or it never wrote)
        for boot in boots:
            account = self._writers.pop((pid, boot), None)
            if account is not None:
                left = self._boots[pid] - 1
                if left:
                    self._boots[pid] = left
                else:
                    del self._boots[pid]
            else:
                account = Account()
            account.used = max(account.used, numbered.get(boot, 0))
            lost += max(0, account.missing)
        lost = max(0, lost - unaccounted)
        if lost:
            _bounded.add(self.lost_by_process, pid, lost, _bounded.by_pid)
        return lost

    def outstanding(self) -> Dict[int, int]:
        """Numbers used but neither received nor reported, by pid, for live writers."""
        gaps: Dict[int, int] = {}
        for (pid, _boot), account in self._writers.items():
            missing = account.missing
            if missing > 0:
                gaps[pid] = gaps.get(pid, 0) + missing
        return gaps


def process_is_gone(pid: int) -> bool:
    """True if ``pid`` no longer runs (exited, or a zombie waiting to be reaped)."""
    if not 0 < pid < 1 << 31:
        return True  # no process has it (a number a frame or the scoreboard claims)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
    except OSError:
        return True
    return fields[:1] == [b"Z"]
