"""The listener thread: the single writer of every sink.

The receiver thread (:mod:`forklog._master.receiver`) fills the backlog
(:mod:`forklog._master.backlog`). The listener takes batches from it,
decodes them and hands each record to every sink whose level admits it (``respect_handler_level``). It
survives anything a sink, a filter or a bad record throws: it counts it,
reports it at a bounded rate and goes on (H3; the stdlib's ``_monitor``
dies on the first unexpected exception).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Callable, List, Optional, Sequence, Tuple

from forklog._master import scheduling
from forklog._master.backlog import Backlog
from forklog._master.counters import Counters
from forklog._master.dispatch import Dispatch
from forklog._master.ledger import process_is_gone
from forklog._master.report import own_record
from forklog._master.sources import Source, decode_exit
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
        #: The writers whose pipe is still open, at stop (Receiver.sources.writers, set by the hub).
        self.live_writers: Callable[[], List[Source]] = list
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
        # Records of the hub's own written here, between batches, are flushed
        # at once: a report must not wait in a buffer for the next record.
        if now >= self._next_check:
            self._next_check = now + self.LIVENESS_INTERVAL
            with self._dispatch_lock:
                self.report_sink_drops()
                self._say_unrouted()
                self.tell_writers(again=True)
                self._flush_batched()
        if self.watch is not None and self.watch.tick(now):
            with self._dispatch_lock:
                self._flush_batched()
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

    def settle_exited(self, pid: int, payload: bytes) -> None:
        """A writer's pipe ended (forklog._master.sources): what it numbered and never arrived is lost."""
        exit_ = decode_exit(payload)
        if exit_ is None:
            return
        boot, numbered, left = exit_
        lost = self._counters.ledger.close(pid, {boot: numbered}, {boot})
        if lost is not None:
            self._counters.settled += 1
            self._report_loss(pid, lost, "exited" if left else "killed")

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

        Every writer: those whose pipe is still open (their table says what
        they numbered: a writer whose every record was dropped on a full
        pipe is counted here, never left unreported), and those the ledger
        knows of whose pipe ended without an account closed.
        """
        ledger = self._counters.ledger
        with self._dispatch_lock:
            open_pipes = self.live_writers()
            for source in open_pipes:
                exit_ = decode_exit(source.exit_payload())
                if exit_ is None or source.pid == self._owner:
                    continue
                boot, numbered, left = exit_
                lost = ledger.close(source.pid, {boot: numbered}, {boot})
                if lost is None:
                    continue
                gone = process_is_gone(source.pid)
                if gone:
                    self._counters.settled += 1
                why = ("exited" if left else "killed") if gone else "still running when the hub stopped"
                self._report_loss(source.pid, lost, why)
            for pid in sorted(set(ledger.pids()) - {self._owner}):
                lost = ledger.close(pid, {})
                if lost is not None:
                    self._report_loss(pid, lost, "killed" if process_is_gone(pid) else "still running")
