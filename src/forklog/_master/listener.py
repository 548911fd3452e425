"""The listener thread: the single writer of every sink.

The receiver thread (:mod:`forklog._master.receiver`) fills the backlog
(:mod:`forklog._master.backlog`). The listener takes batches from it,
decodes them and hands each record to every sink whose level admits it (``respect_handler_level``). It
survives anything a sink, a filter or a bad record throws: it counts it,
reports it at a bounded rate and goes on (H3; the stdlib's ``_monitor``
dies on the first unexpected exception).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from typing import Callable, Dict, List, Optional, Sequence, Set, Tuple

from forklog._master import scheduling
from forklog._master.backlog import Backlog
from forklog._master.counters import Counters
from forklog._master.dispatch import Dispatch
from forklog._master.ledger import process_is_gone
from forklog._master.receiver import boots_of
from forklog._master.report import own_record
from forklog._master.targets import Targets
from forklog._master.watch import StatsWatch
from forklog._stderr import Reporter
from forklog._worker.channel import Channel

__all__ = ["Listener"]


class Listener(Dispatch, threading.Thread):
    """Takes batches from the backlog and dispatches them; the single writer of every sink."""

    BATCH = 256
    #: How often the listener looks for writers that died without a word.
    LIVENESS_INTERVAL = 1.0

    def __init__(
        self,
        backlog: Backlog,
        sinks: Sequence[Tuple[str, logging.Handler]],
        counters: Counters,
        reporter: Reporter,
        *,
        dispatch_lock: scheduling.DispatchLock,
        channel: Channel,
        targets: Optional[Targets] = None,
    ) -> None:
        threading.Thread.__init__(self, name="forklog-listener", daemon=True)
        Dispatch.__init__(
            self,
            sinks,
            counters,
            reporter,
            channel=channel,
            dispatch_lock=dispatch_lock,
            targets=targets,
            on_exited=self.settle_exited,
        )
        self._backlog = backlog
        self._owner = os.getpid()
        self._exit_sent: Dict[int, float] = {}
        #: How an exit is asked of the receiver (Receiver.request_exit, set by the hub).
        self.request_exit: Callable[[int, Optional[Set[int]]], bool] = lambda pid, boots: False
        self.deadline: Optional[float] = None  # set by Hub.stop
        self.abandoned = 0
        #: Set by the hub when a stats record or a Prometheus file is wanted.
        self.watch: Optional[StatsWatch] = None
        #: Set by Hub.reopen() when it found the listener in a batch: the
        #: listener reopens the files (reopen_sinks) before its next batch.
        self.reopen_pending = False
        self.reopen_sinks: Optional[Callable[[], None]] = None
        self._next_check = 0.0

    def run(self) -> None:
        scheduling.background()
        self._next_check = time.monotonic() + self.LIVENESS_INTERVAL
        while True:
            try:
                if self._step():
                    return
            except Exception as exc:  # noqa: BLE001 - the listener survives anything (H3; issue 21, item 3)
                self._counters.listener_faults += 1
                self._reporter.report("listener", f"the listener survived a fault and goes on: {exc!r}")

    def _step(self) -> bool:
        """One round: the periodic work, then one batch. True when the backlog is closed and empty."""
        backlog = self._backlog
        now = time.monotonic()
        if self.deadline is not None and now >= self.deadline:
            self.abandoned = backlog.clear()
            return True
        if now >= self._next_check:
            self._next_check = now + self.LIVENESS_INTERVAL
            self._look_for_the_dead()
            with self._dispatch_lock:
                self.report_sink_drops()
                self._say_unrouted()
                self.tell_writers(again=True)
        if self.watch is not None:
            self.watch.tick(now)
        if self.reopen_pending and self.reopen_sinks is not None:
            self.reopen_pending = False
            with self._dispatch_lock:
                self.reopen_sinks()
        batch = backlog.get_batch(self.BATCH, 0.25)
        if batch:
            with self._dispatch_lock:
                try:
                    self.dispatch_batch(batch)
                    self._flush_batched()
                finally:
                    backlog.done()
            if self._last_created:
                self._counters.lag = max(0.0, time.time() - self._last_created)
        elif backlog.closed and not len(backlog):
            self._settle_live_writers()
            with self._dispatch_lock:
                self.report_sink_drops()
                self._say_unrouted()
            return True
        return False

    def _flush_batched(self) -> None:
        """Flush the stream sinks once per batch (their emit() no longer does, see Hub)."""
        for name, sink in self._sinks:
            flush = getattr(sink, "_forklog_flush", None)
            if flush is not None:
                try:
                    flush()
                except Exception as exc:  # noqa: BLE001
                    self._counters.sink_failure(self._reporter, name, "to flush", exc, failed=0)
        self.targets.flush()

    def exited(self, pid: int, timeout: float = 0.0) -> bool:
        """Ask the receiver to settle ``pid``'s account once its records are read (never a frame).

        ``timeout`` is kept for callers: the request never waits. It names
        the incarnations (boots) of ``pid`` known now, when it is gone: by the
        time the listener settles it, a new process may have the same pid and
        a scoreboard slot of its own, which must not be settled or freed with
        the dead one's.
        """
        boots = set(self._counters.ledger.boots(pid))
        board = self._channel.scoreboard
        if board is not None:
            with contextlib.suppress(OSError):
                boots.update(boot for _slot, boot, _count in board.claimed().get(pid, []))
        if len(boots) > 256:  # a pid with hundreds of incarnations: settle them all
            boots = set()
        if self.request_exit(pid, boots or None):
            self._exit_sent[pid] = time.monotonic()
            return True
        return False

    def _look_for_the_dead(self) -> None:
        # A pool child, or a worker whose host has no child_exit hook, can die
        # without telling anyone: look for it, and ask for its exit behind
        # everything it wrote (Receiver.request_exit).
        now = time.monotonic()
        board = self._channel.scoreboard
        try:
            pids = set(self._counters.ledger.pids())
            if board is not None:
                pids.update(board.claimed())
            for pid in sorted(pids):
                if pid == self._owner or now - self._exit_sent.get(pid, -60.0) < 30.0:
                    continue
                if process_is_gone(pid):
                    self.exited(pid)
        except Exception as exc:  # noqa: BLE001
            self._reporter.report("liveness", f"could not check for dead writers: {exc!r}")

    # -- settling the writers' accounts ---------------------------------------------

    def settle_exited(self, pid: int, payload: bytes) -> None:
        """``pid``'s exit, queued by the receiver (see exited()): what it numbered, not received, is lost."""
        self._exit_sent.pop(pid, None)
        boots = boots_of(payload)
        numbered, left = self._release_slots(pid, boots)
        lost = self._counters.ledger.close(pid, numbered, boots)
        if lost is not None:
            self._counters.settled += 1
            self._report_loss(pid, lost, "exited" if left else "killed")

    def _release_slots(self, pid: int, boots: Optional[Set[int]] = None) -> Tuple[Dict[int, int], bool]:
        """What the scoreboard says ``pid`` numbered, by boot, and whether it left by the exit path.

        Its slots are freed. ``boots``: only these incarnations' slots (see
        exited()); all if None. "Left" needs a slot whose writer set the exit
        mark (``Channel.leave``) and none without it; a writer with no slot
        (forked by a worker) never counts as having left.
        """
        board = self._channel.scoreboard
        numbered: Dict[int, int] = {}
        marks: List[bool] = []
        if board is not None:
            for slot, boot, count, marked in board.entries().get(pid, []):
                if boots and boot not in boots:
                    continue  # a live process that has the dead one's pid now
                numbered[boot] = count
                marks.append(marked)
                board.release(slot)
        return numbered, bool(marks) and all(marks)

    def _report_loss(self, pid: int, lost: int, why: str) -> None:
        if not lost:
            return
        record = own_record(
            "forklog: lost %d records from pid %d (%s)",
            (lost, pid, why),
            forklog_lost={"pid": pid, "count": lost},
        )
        self._write(record)

    def _settle_live_writers(self) -> None:
        """At stop: what every writer numbered and never arrived is lost too.

        Every writer: those the ledger knows (a record of theirs arrived) and
        those only the scoreboard knows. A writer whose every record was
        dropped on a full pipe, then SIGKILLed before a liveness round or a
        ``child_exit`` said so, is in the scoreboard alone; its records are
        counted here, never left unreported.
        """
        ledger = self._counters.ledger
        board = self._channel.scoreboard
        with self._dispatch_lock:
            pids = set(ledger.pids())
            if board is not None:
                try:
                    pids.update(board.claimed())
                except OSError as exc:
                    self._reporter.report("liveness", f"could not read the scoreboard: {exc!r}")
            for pid in sorted(pids - {self._owner}):
                numbered, left = self._release_slots(pid)
                lost = ledger.close(pid, numbered)
                if lost is None:
                    continue
                gone = process_is_gone(pid)
                if gone:
                    self._counters.settled += 1
                why = ("exited" if left else "killed") if gone else "still running when the hub stopped"
                self._report_loss(pid, lost, why)
