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

from forklog import _wire as wire
from forklog._master import scheduling
from forklog._master.backlog import DROPS, EXITED, Backlog, Item
from forklog._master.counters import Counters
from forklog._master.isolation import BufferedSink
from forklog._master.lanes import Lanes, Plan, down_lane
from forklog._master.ledger import process_is_gone
from forklog._master.lines import LINES_BYTE, FieldTarget, Lines, Target, line_formatter
from forklog._master.receiver import EXIT_MARK, boots_of
from forklog._master.report import Reporter, own_record
from forklog._master.targets import Targets
from forklog._master.watch import Watch
from forklog._wire import adopted_lines, framing
from forklog._worker.channel import Channel

__all__ = ["Listener"]

#: A sink's fast lane: writes the line of (fields, pid, exc_text); returns None,
#: or what to call with the record instead (the sink's ``emit``, or its
#: ``handleError`` when writing the line failed).
_NOT_FIELDS = (LINES_BYTE, adopted_lines.TARGET_BYTE)


class Listener(threading.Thread):
    """Decodes records and hands them to the sinks. The single writer of every sink."""

    BATCH = 256
    #: How often the listener looks for writers that died without a word.
    LIVENESS_INTERVAL = 1.0
    #: Write the lines of file and stream sinks straight from the decoded
    #: fields, without a LogRecord, when their formatter allows (see _lane).
    FAST_LANE = True

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
        super().__init__(name="forklog-listener", daemon=True)
        #: The sinks of the handlers the processes adopted (see forklog._master.targets).
        self.targets = targets if targets is not None else Targets(counters, reporter)
        self._backlog = backlog
        self._sinks = list(sinks)
        self._counters = counters
        self._reporter = reporter
        self._dispatch_lock = dispatch_lock
        self._channel = channel
        self._owner = os.getpid()
        self._exit_sent: Dict[int, float] = {}
        #: Buffered sinks refusing the current batch, with what they refused.
        self._down: List[Tuple[BufferedSink, List[Tuple[str, int]]]] = []
        self.deadline: Optional[float] = None  # set by Hub.stop
        self.abandoned = 0
        self._last_created = 0.0
        #: Renderers by formatter, with the settings they were made from.
        self._lanes = Lanes()
        #: Set by the hub when a stats record or a Prometheus file is wanted.
        self.watch: Optional[Watch] = None
        #: The lines the emitting processes made (see Hub._make_lines_in_workers).
        self.lines = Lines(counters, reporter)
        #: What the scoreboard last told the writers (see _line_targets).
        self._fields_wanted = True
        #: Set by Hub.reopen() when it found the listener in a batch: the
        #: listener reopens the files (reopen_sinks) before its next batch.
        self.reopen_pending = False
        self.reopen_sinks: Optional[Callable[[], None]] = None

    def run(self) -> None:
        scheduling.background()
        backlog = self._backlog
        next_check = time.monotonic() + self.LIVENESS_INTERVAL
        while True:
            now = time.monotonic()
            if self.deadline is not None and now >= self.deadline:
                self.abandoned = backlog.clear()
                return
            if now >= next_check:
                self._look_for_the_dead()
                with self._dispatch_lock:
                    self.report_sink_drops()
                    self._say_unrouted()
                    self.tell_writers()
                next_check = now + self.LIVENESS_INTERVAL
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
                return

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
        """Queue the marker that settles ``pid``'s account once its records are read.

        The marker names the incarnations (boots) of ``pid`` known now, when
        it is gone: by the time the listener reaches the marker, a new
        process may have the same pid and a scoreboard slot of its own, which
        must not be settled or freed with the dead one's.
        """
        boots = set(self._counters.ledger.boots(pid))
        board = self._channel.scoreboard
        if board is not None:
            with contextlib.suppress(OSError):
                boots.update(boot for _slot, boot, _count in board.claimed().get(pid, []))
        marker = (
            EXIT_MARK + pid.to_bytes(4, "little") + b"".join(b.to_bytes(4, "little") for b in sorted(boots))
        )
        if len(marker) > 1024:  # a pid with hundreds of incarnations: settle them all
            marker = marker[: len(EXIT_MARK) + 4]
        if self._channel.send_control(marker, timeout):
            self._exit_sent[pid] = time.monotonic()
            return True
        return False

    def _look_for_the_dead(self) -> None:
        # A pool child, or a worker whose host has no child_exit hook, can die
        # without telling anyone: look for it, and send its exit marker down
        # the pipe behind everything it wrote.
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

    def dispatch(self, item: Item) -> None:
        kind, pid, boot, seq, payload = item
        counters = self._counters
        if kind == DROPS:
            self._drops_reported(pid, boot, payload)
            return
        if kind == EXITED:
            self._exit_sent.pop(pid, None)
            boots = boots_of(payload)
            lost = counters.ledger.close(pid, self._release_slots(pid, boots), boots)
            if lost is not None:
                counters.settled += 1
                self._report_loss(pid, lost, "killed")
            return
        counters.received += 1
        counters.ledger.received(pid, boot, seq)
        try:
            if payload[:1] == adopted_lines.TARGET_BYTE:
                line = adopted_lines.decode(payload)
                self._last_created = line.created
                self.targets.write(line, pid)
                return
            if payload[:1] == LINES_BYTE:
                decoded = wire.decode_lines(payload)
                self._last_created = decoded[1]
                self.lines.write_one(decoded, pid, self._sinks, payload)
                return
            record = wire.decode(payload, pid)
        except Exception as exc:  # noqa: BLE001
            counters.bad_records += 1
            self._reporter.report("decode", f"skipped an undecodable record from pid {pid}: {exc}")
            return
        self._deliver(record, pid, boot)

    def _deliver(self, record: logging.LogRecord, pid: int, boot: int) -> None:
        self._last_created = record.created
        self._write(record)

    def _drops_reported(self, pid: int, boot: int, payload: bytes) -> None:
        """A writer's drop report (a control frame): counted, and said in the log as its record."""
        try:
            counts = framing.decode_drops(payload)
        except ValueError as exc:
            self._counters.bad_records += 1
            self._reporter.report("decode", f"skipped an undecodable drop report from pid {pid}: {exc}")
            return
        total = sum(counts.values())
        if not total:
            return
        self._counters.add_drops(pid, counts)
        self._counters.ledger.dropped(pid, boot, total)
        detail = ", ".join(f"{name}: {count}" for name, count in sorted(counts.items()))
        record = own_record(
            "forklog: dropped %d records while the queue was full (%s)",
            (total, detail),
            forklog_dropped=dict(counts),
        )
        record.process = pid
        if self._last_created:  # in the stream's time: where the drops happened, near enough
            record.created = self._last_created
            record.msecs = (record.created - int(record.created)) * 1000
            record.relativeCreated = (record.created - logging._startTime) * 1000  # type: ignore[attr-defined]
        self._write(record)

    # -- the fast lane -----------------------------------------------------------

    def dispatch_batch(self, batch: Sequence[Item]) -> None:
        """``dispatch`` each item; through the fast lane when a sink has one."""
        plan = self._plan() if self.FAST_LANE else None
        if plan is None:
            for item in batch:
                self.dispatch(item)
            return
        targets = self._line_targets(plan)
        if targets is not None:
            lines, buffered = targets
            created = self.lines.dispatch(
                batch, lines, lambda item: self._dispatch_planned(item, plan), buffered
            )
            self._last_created = max(self._last_created, created)
        else:
            for item in batch:
                self._dispatch_planned(item, plan)
        for sink, refused in self._down:
            sink.count_refused(refused)
        self._down.clear()
        self.tell_writers()

    def _plan(self) -> Optional[Plan]:
        """Each sink with its lane (None: the LogRecord path); None if no sink has one.

        A sink after one that may change the record on the listener thread
        (a filter, a handler of unknown kind) takes the LogRecord path, so
        that it sees the change as it would have.
        """
        plan: Plan = []
        fast = False
        tainted = False
        for name, sink in self._sinks:
            lane = None if tainted else self._lanes.lane(sink)
            if lane is not None and isinstance(sink, BufferedSink) and sink.refusing():
                # Full (its server is down) when the batch starts: it refuses the
                # batch, counted in one go at its end.
                refused: List[Tuple[str, int]] = []
                self._down.append((sink, refused))
                lane = down_lane(refused.append)
            if lane is None and (sink.filters or not isinstance(sink, BufferedSink)):
                tainted = True
            fast = fast or lane is not None
            plan.append((name, sink, lane))
        return plan if fast else None

    def line_formatter(self, sink: logging.Handler) -> Optional[logging.Formatter]:
        """``sink``'s formatter if the workers can make its lines (:mod:`~forklog._master.lines`)."""
        return line_formatter(sink) if self.FAST_LANE else None

    def _line_targets(self, plan: Plan) -> Optional[Tuple[List[Target], List[FieldTarget]]]:
        """The sinks of ``plan`` that take lines, and the buffered ones that take fields.

        None if a sink is neither (the per-record path).
        """
        if not self.lines.active:
            return None
        targets: List[Target] = []
        buffered: List[FieldTarget] = []
        down = {id(sink): refused for sink, refused in self._down}
        for name, sink, lane in plan:
            if lane is not None and isinstance(sink, BufferedSink) and not sink.filters:
                buffered.append(FieldTarget(name, sink, sink.level, down.get(id(sink))))
                continue
            target = self.lines.target(name, sink) if lane is not None else None
            if target is None:
                return None
            targets.append(target)
        return targets, buffered

    def tell_writers(self) -> None:
        """Tell the writers whether the buffered sinks take records now (see ``Channel._want_fields``).

        After every batch and on the liveness tick: a sink fills, or drains
        when its server comes back, between batches too.
        """
        if not self.lines.active or self._channel is None or self._channel.scoreboard is None:
            return
        buffered = [sink for _name, sink in self._sinks if isinstance(sink, BufferedSink)]
        wanted = not buffered or any(not sink.refusing() for sink in buffered)
        if wanted != self._fields_wanted:
            self._fields_wanted = wanted
            self._channel.scoreboard.want_fields(wanted)

    def _dispatch_planned(self, item: Item, plan: Plan) -> None:
        """``dispatch``, with each sink's line made by its lane when it has one."""
        kind, pid, boot, seq, payload = item
        if kind >= EXITED or payload[:1] in _NOT_FIELDS:
            # A process gone, lines no lane takes as they are (see Lines.target), an adopted handler's line.
            self.dispatch(item)
            return
        counters = self._counters
        counters.received += 1
        counters.ledger.received(pid, boot, seq)
        try:
            fields = wire.decode_fields(payload)
            if fields[wire.Field.NAME] == "forklog" or not wire.plain_fields(fields):
                # The hub's own records (drop summaries the ledger must see), or
                # fields encode() does not write: the LogRecord path.
                self._deliver(wire.record_from_fields(fields, pid), pid, boot)
                return
        except Exception as exc:  # noqa: BLE001
            counters.bad_records += 1
            self._reporter.report("decode", f"skipped an undecodable record from pid {pid}: {exc}")
            return
        self._last_created = fields[wire.Field.CREATED]
        levelno = fields[wire.Field.LEVELNO]
        exception = fields[wire.Field.EXCEPTION]
        exc_text = wire.exception_text(exception) if type(exception) is tuple else exception
        record: Optional[logging.LogRecord] = None
        written = counters.written
        taken = False
        for name, sink, lane in plan:
            if levelno < sink.level:
                continue
            taken = True
            try:
                if lane is not None:
                    instead = lane(fields, pid, exc_text)
                    if instead is not None:
                        if record is None:
                            record = wire.record_from_fields(fields, pid)
                        instead(record)
                    written[name] += 1
                    continue
                if record is None:
                    record = wire.record_from_fields(fields, pid)
                if sink.filters:
                    if sink.handle(record):
                        written[name] += 1
                else:
                    sink.emit(record)
                    written[name] += 1
            except Exception as exc:  # noqa: BLE001 - a filter or a handle() that raised
                counters.sink_failure(self._reporter, name, "on a record", exc)
        if not taken:
            self.unrouted(fields[wire.Field.NAME], fields[wire.Field.LEVELNAME])

    def unrouted(self, logger: str, levelname: str) -> None:
        """Count a record no sink took (every sink's level above it, their filters, or no sink)."""
        counters = self._counters
        counters.unrouted += 1
        if counters.unrouted_first is None:
            counters.unrouted_first = f"logger {wire.safe_str(logger)!r} at {wire.safe_str(levelname)}"

    def _say_unrouted(self) -> None:
        """Say once, in the log, that records reach the hub and no sink takes them."""
        counters = self._counters
        if counters.unrouted_first is not None and not counters.unrouted_reported:
            counters.unrouted_reported = True
            self._write(
                own_record(
                    "forklog: %d records reached the hub and no sink took them (the first: %s): every sink's "
                    "level is above theirs, or their filters refused them; counted in stats().unrouted",
                    (counters.unrouted, counters.unrouted_first),
                    forklog_unrouted=counters.unrouted,
                ),
                self._sinks,
            )

    def write(self, record: logging.LogRecord) -> None:
        """Write a record of the hub's own to every sink (from the listener thread)."""
        with self._dispatch_lock:
            self._write(record)

    def _write(
        self, record: logging.LogRecord, sinks: Optional[Sequence[Tuple[str, logging.Handler]]] = None
    ) -> None:
        counters = self._counters
        levelno = record.levelno
        if not self._sinks and record.name == "forklog":
            # The hub's own word and no sink to take it (a logging config of
            # the app's replaced forklog's sinks): stderr, never nowhere.
            self._reporter.write(wire.safe_str(record.getMessage()))
            return
        taken = False
        for name, sink in self._sinks if sinks is None else sinks:
            if levelno < sink.level:
                continue
            try:
                if sink.filters:
                    if sink.handle(record):
                        counters.written[name] += 1
                        taken = True
                else:
                    # The listener is the sink's only writer (reopen() waits
                    # for the dispatch lock), so the handler's lock is moot.
                    sink.emit(record)
                    counters.written[name] += 1
                    taken = True
            except Exception as exc:  # noqa: BLE001 - a filter or a handle() that raised
                taken = True  # counted as the sink's failure
                counters.sink_failure(self._reporter, name, "on a record", exc)
        if not taken and sinks is None:
            self.unrouted(record.name, record.levelname)

    def report_sink_drops(self) -> None:
        """Say in the log (through every sink) what a sink could not write since last time.

        Called by the listener thread, and by ``Hub.stop()`` once the
        listener has finished and the buffered sinks are closed.
        """
        reported = self._counters.sink_drops_reported
        totals = {name: self._counters.sink_dropped(name, sink) for name, sink in self._sinks}
        totals.update(self.targets.dropped())
        for name, dropped in totals.items():
            if dropped <= reported.get(name, 0):
                continue
            count = dropped - reported.get(name, 0)
            reported[name] = dropped
            record = own_record(
                "forklog: sink %s could not write %d records (%d in all)",
                (name, count, dropped),
                forklog_sink_dropped={"sink": name, "count": count, "total": dropped},
            )
            self._write(record, [(n, s) for n, s in self._sinks if not getattr(s, "closed", False)])

    def _release_slots(self, pid: int, boots: Optional[Set[int]] = None) -> Dict[int, int]:
        """What the scoreboard says ``pid`` numbered, by boot; its slots are freed.

        ``boots``: only these incarnations' slots (see exited()); all if None.
        """
        board = self._channel.scoreboard
        numbered: Dict[int, int] = {}
        if board is not None:
            for slot, boot, count in board.claimed().get(pid, []):
                if boots and boot not in boots:
                    continue  # a live process that has the dead one's pid now
                numbered[boot] = count
                board.release(slot)
        return numbered

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
                lost = ledger.close(pid, self._release_slots(pid))
                if lost is None:
                    continue
                gone = process_is_gone(pid)
                if gone:
                    self._counters.settled += 1
                self._report_loss(pid, lost, "killed" if gone else "still running when the hub stopped")
