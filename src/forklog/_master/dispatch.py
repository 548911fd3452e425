"""The record path: each record the listener takes, handed to every sink whose level admits it.

One path serves every sink. A sink takes either a line or a record:

* a file or stream sink whose formatter forklog reproduces takes a *line*,
  through its *lane*: the line the emitting process made
  (:mod:`forklog._wire.lines`), or one made from the record's fields
  (:mod:`forklog._master.lanes`);
* any other handler takes a ``LogRecord``, made once per record, when the
  first such sink wants it.

The *plan* says, per batch, which sink takes what, and :meth:`Dispatch._to_sinks`
hands a record to every sink. When every sink takes the workers' lines,
:meth:`LineWriter.dispatch <forklog._master.line_writer.LineWriter.dispatch>`
appends the whole batch to each file in one write: the same path, batched.
A sink that raises is counted and said at a bounded rate
(:meth:`Counters.sink_failure`); the listener goes on (H3).
"""

from __future__ import annotations

import logging
from typing import Any, Callable, List, NamedTuple, Optional, Sequence, Tuple

from forklog import _wire as wire
from forklog._master import scheduling
from forklog._master.backlog import DROPS, EXITED, Item
from forklog._master.buffered import BufferedSink
from forklog._master.counters import Counters
from forklog._master.lanes import NOT_WRITTEN, FastLanes, Lane, down_lane
from forklog._master.line_writer import LINES_BYTE, FieldSink, LineSink, LineWriter, line_formatter
from forklog._master.report import own_record
from forklog._master.targets import Targets
from forklog._stderr import Reporter
from forklog._wire import adopted_lines, framing
from forklog._worker.channel import Channel

__all__ = ["Dispatch", "Step"]


class Step(NamedTuple):
    """One sink of a plan: its name, the handler, and its lane (None: it takes the ``LogRecord``)."""

    name: str
    sink: logging.Handler
    lane: Optional[Lane]


class Dispatch:
    """The record path (see the module): the listener thread is its only caller."""

    #: Make the lines of file and stream sinks without a LogRecord when their
    #: formatter allows: in the emitting processes, or from the fields here.
    FAST_LANE = True

    def __init__(
        self,
        sinks: Sequence[Tuple[str, logging.Handler]],
        counters: Counters,
        reporter: Reporter,
        *,
        channel: Channel,
        dispatch_lock: scheduling.DispatchLock,
        targets: Optional[Targets],
        on_exited: Callable[[int, bytes], None],
    ) -> None:
        self._sinks = list(sinks)
        self._counters = counters
        self._reporter = reporter
        self._channel = channel
        self._dispatch_lock = dispatch_lock
        #: Settles a writer's account when its pipe ends (see forklog._master.sources).
        self._on_exited = on_exited
        #: The sinks of the handlers the processes adopted (see forklog._master.targets).
        self.targets = targets if targets is not None else Targets(counters, reporter)
        #: Every sink taking the LogRecord: the plan of the hub's own records.
        self._record_plan = [Step(name, sink, None) for name, sink in self._sinks]
        #: Buffered sinks refusing the current batch, with what they refused.
        self._down: List[Tuple[BufferedSink, List[Tuple[str, int]]]] = []
        self._last_created = 0.0
        #: Renderers by formatter, with the settings they were made from.
        self._lanes = FastLanes()
        #: The lines the emitting processes made (see Hub._make_lines_in_workers).
        self.lines = LineWriter(counters, reporter)
        #: What the scoreboard last told the writers (see tell_writers).
        self._fields_wanted = True
        #: The plan of the batch being dispatched (see _dispatch_one).
        self._batch_plan: List[Step] = []

    def dispatch_batch(self, batch: Sequence[Item]) -> None:
        """Hand each item of ``batch`` to the sinks, as the batch's plan says."""
        plan = self._plan()
        line_targets = self._line_targets(plan)
        if line_targets is not None:
            lines, buffered = line_targets
            self._batch_plan = plan
            created = self.lines.dispatch(batch, lines, self._dispatch_one, buffered)
            if created:
                self._last_created = created
        else:
            dispatch = self.dispatch
            for item in batch:
                try:
                    dispatch(item, plan)
                except Exception as exc:  # noqa: BLE001 - one item's fault is that item's
                    self._item_fault(exc)
        for sink, refused in self._down:
            sink.count_refused(refused)
        self._down.clear()
        self.tell_writers()

    def _dispatch_one(self, item: Item) -> None:
        """:meth:`dispatch` with the batch's plan, one item's fault kept to that item (the lines' path)."""
        try:
            self.dispatch(item, self._batch_plan)
        except Exception as exc:  # noqa: BLE001 - bytes from a worker no check foresaw, or a bug
            self._item_fault(exc)

    def _item_fault(self, exc: Exception) -> None:
        """One item could not be dispatched: counted, said, the batch goes on."""
        self._counters.listener_faults += 1
        self._reporter.report("listener", f"a record could not be dispatched: {exc!r}")

    def dispatch(self, item: Item, plan: Optional[List[Step]] = None) -> None:
        """Hand one item to the sinks: a record, its lines, an adopted handler's line, or a control word."""
        kind, pid, boot, seq, payload = item
        if plan is None:
            plan = self._record_plan
        if kind == DROPS:
            self._drops_reported(pid, boot, payload)
            return
        if kind == EXITED:
            self._on_exited(pid, payload)
            return
        counters = self._counters
        counters.record_received(pid, boot, seq)
        try:
            marker = payload[:1]
            if marker == LINES_BYTE:
                self._lines_to_sinks(payload, pid)
                return
            if marker == adopted_lines.TARGET_BYTE:
                line = adopted_lines.decode(payload)
                self._last_created = line.created
                self.targets.write(line, pid)
                return
            fields = wire.decode_fields(payload)
            record = None
            if plan is self._record_plan:
                record = wire.record_from_fields(fields, pid)  # no sink has a lane
            elif fields[wire.Field.NAME] == "forklog":
                # The hub's own records (drop summaries the ledger must see): the LogRecord for every sink.
                record = wire.record_from_fields(fields, pid)
        except Exception as exc:  # noqa: BLE001
            counters.undecodable(self._reporter, pid, exc)
            return
        if record is not None:
            self._last_created = record.created
            self._write(record)
            return
        self._last_created = fields[wire.Field.CREATED]
        exception = fields[wire.Field.EXCEPTION]
        exc_text = wire.exception_text(exception) if type(exception) is tuple else exception
        if not self._to_sinks(plan, fields[wire.Field.LEVELNO], fields, pid, exc_text):
            counters.unrouted_record(fields[wire.Field.NAME], fields[wire.Field.LEVELNAME])

    def _lines_to_sinks(self, payload: bytes, pid: int) -> None:
        """One lines payload, on its own: each sink takes its line, or a record made of the payload.

        The record is made of the fields when the payload has them, else of the line.
        """
        decoded = wire.decode_lines(payload)
        self._last_created = decoded.created
        plan = [Step(name, sink, self.lines.lane(name, sink)) for name, sink in self._sinks]

        def make_record() -> logging.LogRecord:
            fields = wire.lines_fields(payload)
            if fields is not None:
                return wire.record_from_fields(fields, pid)
            return wire.lines_record(decoded.levelno, decoded.created, decoded.name, decoded.lines[0], pid)

        if not self._to_sinks(plan, decoded.levelno, decoded.lines, pid, make_record=make_record):
            self._counters.unrouted_record(decoded.name, logging.getLevelName(decoded.levelno))

    def _to_sinks(
        self,
        plan: Sequence[Step],
        levelno: int,
        source: Any,
        pid: int,
        exc_text: Any = None,
        *,
        record: Optional[logging.LogRecord] = None,
        make_record: Optional[Callable[[], logging.LogRecord]] = None,
    ) -> bool:
        """Hand one record to each sink of ``plan`` whose level admits it; whether one took it.

        A sink with a lane gets its line from ``source`` (the fields, or the
        lines the emitting process made); any other gets the ``LogRecord``:
        ``record``, or made once, by ``make_record`` or from the fields. A
        sink whose filters refuse the record has not taken it; one that
        raised has (its failure is counted).
        """
        counters = self._counters
        written = counters.written
        taken = False
        for name, sink, lane in plan:
            if levelno < sink.level:
                continue
            try:
                instead = None
                if lane is not None:
                    instead = lane(source, pid, exc_text)
                    if instead is None:  # the sink wrote its line
                        written[name] += 1
                        taken = True
                        continue
                    if instead is NOT_WRITTEN:  # it could not, and counted that
                        taken = True
                        continue
                if record is None:
                    record = make_record() if make_record else wire.record_from_fields(source, pid)
                if instead is not None:  # the lane's sink wants the record: its emit, or its handleError
                    instead(record)
                elif sink.filters:
                    if not sink.handle(record):
                        continue
                else:
                    # The listener is the sink's only writer (reopen() waits
                    # for the dispatch lock), so the handler's lock is moot.
                    sink.emit(record)
                written[name] += 1
                taken = True
            except Exception as exc:  # noqa: BLE001 - a filter or a handle() that raised
                taken = True  # counted as the sink's failure
                counters.sink_failure(self._reporter, name, "on a record", exc)
        return taken

    def _drops_reported(self, pid: int, boot: int, payload: bytes) -> None:
        """A writer's drop report (a control frame): counted, and said in the log as its record."""
        try:
            counts = framing.decode_drops(payload)
        except ValueError as exc:
            self._counters.undecodable(self._reporter, pid, exc, "drop report")
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

    def _plan(self) -> List[Step]:
        """Each sink with its lane (None: it takes the LogRecord), for this batch.

        A sink after one that may change the record on the listener thread
        (a filter, a handler of unknown kind) takes the LogRecord path, so
        that it sees the change as it would have.
        """
        if not self.FAST_LANE:
            return self._record_plan
        plan: List[Step] = []
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
            plan.append(Step(name, sink, lane))
        return plan if fast else self._record_plan

    def line_formatter(self, sink: logging.Handler) -> Optional[logging.Formatter]:
        """``sink``'s formatter if the workers can make its lines (:mod:`~forklog._master.line_writer`)."""
        return line_formatter(sink) if self.FAST_LANE else None

    def _line_targets(self, plan: List[Step]) -> Optional[Tuple[List[LineSink], List[FieldSink]]]:
        """The sinks of ``plan`` that take lines, and the buffered ones that take fields.

        None if a sink is neither (the per-record path).
        """
        if not self.lines.active or plan is self._record_plan:
            return None
        targets: List[LineSink] = []
        buffered: List[FieldSink] = []
        down = {id(sink): refused for sink, refused in self._down}
        for name, sink, lane in plan:
            if lane is not None and isinstance(sink, BufferedSink) and not sink.filters:
                buffered.append(FieldSink(name, sink, sink.level, down.get(id(sink))))
                continue
            target = self.lines.target(name, sink) if lane is not None else None
            if target is None:
                return None
            targets.append(target)
        return targets, buffered

    def tell_writers(self, again: bool = False) -> None:
        """Tell the writers whether the buffered sinks take records now (see ``Channel._want_fields``).

        After every batch, when it changed, and ``again`` on the liveness
        tick: a sink fills, or drains when its server comes back, between
        batches too, and the word is in memory every writer can write.
        """
        if not self.lines.active or self._channel is None or self._channel.scoreboard is None:
            return
        buffered = [sink for _name, sink in self._sinks if isinstance(sink, BufferedSink)]
        wanted = not buffered or any(not sink.refusing() for sink in buffered)
        if wanted != self._fields_wanted or again:
            self._fields_wanted = wanted
            self._channel.scoreboard.want_fields(wanted)

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

    def _write(
        self, record: logging.LogRecord, sinks: Optional[Sequence[Tuple[str, logging.Handler]]] = None
    ) -> None:
        """Hand a ``LogRecord`` to every sink (or to ``sinks``): the hub's own, or one no lane takes."""
        if not self._sinks and record.name == "forklog":
            # The hub's own word and no sink to take it (a logging config of
            # the app's replaced forklog's sinks): stderr, never nowhere.
            self._reporter.write(wire.safe_str(record.getMessage()))
            return
        plan = self._record_plan if sinks is None else [Step(name, sink, None) for name, sink in sinks]
        if not self._to_sinks(plan, record.levelno, None, 0, record=record) and sinks is None:
            self._counters.unrouted_record(record.name, record.levelname)
