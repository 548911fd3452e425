"""The master's two threads: the receiver drains the pipe, the listener writes.

``receiver`` reads the pipe in large chunks, puts frames back together
(:class:`~forklog.transport.FrameReader`) and appends whole records to the
bounded :class:`Backlog`. When the backlog is full it stops reading, the
pipe fills, and the writers' drop policy takes over: memory stays bounded
by ``queue_size`` records (and ``max_backlog_bytes``) plus the pipe.

``listener`` takes batches from the backlog, decodes them and hands each
record to every sink whose level admits it (``respect_handler_level``). It
survives anything a sink, a filter or a bad record throws: it counts it,
reports it at a bounded rate and goes on (H3; the stdlib's ``_monitor``
dies on the first unexpected exception).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import select
import threading
import time
from typing import Any, Callable, Deque, Dict, List, Optional, Sequence, Set, Tuple

from forklog import _bounded, _target, formatters, transport, wire
from forklog.master import threads
from forklog.master.isolation import BufferedSink
from forklog.master.ledger import Ledger, process_is_gone
from forklog.master.lines import LINES_BYTE, FieldTarget, Lines, Target, line_formatter
from forklog.master.report import Reporter, own_record
from forklog.master.sinks import RotatingFileSink
from forklog.master.targets import Targets
from forklog.master.watch import Watch

__all__ = ["Backlog", "Counters", "Listener", "Receiver"]

#: kind, pid, boot, seq, payload. A record's kind is its frame's flags (the
#: receiver queues FrameReader's tuples as they are), or RECORD.
Item = Tuple[int, int, int, int, bytes]
RECORD = 0
# not a frame's flags: the process is gone and all it wrote is ahead of this item
from forklog.master.lines import DROPS, EXITED  # noqa: E402  # isort: skip

#: The control frame that tells the reader a process is gone: prefix + pid.
EXIT_MARK = b"exit"

#: A sink's fast lane: writes the line of (fields, pid, exc_text); returns None,
#: or what to call with the record instead (the sink's ``emit``, or its
#: ``handleError`` when writing the line failed).
Lane = Callable[[Tuple[Any, ...], int, Any], Optional[Callable[[logging.LogRecord], Any]]]
Plan = List[Tuple[str, logging.Handler, Optional[Lane]]]
_STREAM_EMITS = (logging.StreamHandler.emit, logging.FileHandler.emit)
_NOT_FIELDS = (LINES_BYTE, _target.TARGET_BYTE)


class Backlog:
    """A bounded FIFO of encoded records between the two threads."""

    def __init__(self, max_records: int, max_bytes: int) -> None:
        self.max_records = max_records
        self.max_bytes = max_bytes
        self._items: Deque[Item] = collections.deque()
        self._bytes = 0
        self._cond = threading.Condition(threading.Lock())
        self.closed = False

    def __len__(self) -> int:
        return len(self._items)

    def put_many(self, items: List[Item], deadline: Optional[Callable[[], bool]] = None) -> bool:
        """Append ``items`` in order, waiting while full; False if ``deadline()`` says give up."""
        queue = self._items
        with self._cond:
            size = sum([len(item[4]) for item in items])
            if len(queue) + len(items) <= self.max_records and self._bytes + size <= self.max_bytes:
                queue.extend(items)  # the common case: room for all of them
                self._bytes += size
                self._cond.notify_all()
                return True
            for item in items:
                size = len(item[4])
                while queue and (len(queue) >= self.max_records or self._bytes + size > self.max_bytes):
                    self._cond.notify_all()
                    if deadline is not None and deadline():
                        return False
                    self._cond.wait(0.05)
                queue.append(item)
                self._bytes += size
            self._cond.notify_all()
        return True

    def get_batch(self, limit: int, timeout: float) -> List[Item]:
        with self._cond:
            if not self._items and not self.closed:
                self._cond.wait(timeout)
            items = self._items
            if len(items) <= limit:
                batch = list(items)
                items.clear()
            else:
                popleft = items.popleft
                batch = [popleft() for _ in range(limit)]
            self._bytes -= sum([len(item[4]) for item in batch])
            if batch:
                self._cond.notify_all()
            return batch

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def clear(self) -> int:
        with self._cond:
            count = len(self._items)
            self._items.clear()
            self._bytes = 0
            self._cond.notify_all()
            return count


class Counters:
    """What the hub has seen; written by the master's threads, read by ``stats()``."""

    def __init__(self, sink_names: Sequence[str]) -> None:
        self.received = 0
        self.written: Dict[str, int] = {name: 0 for name in sink_names}
        self.sink_errors: Dict[str, int] = {name: 0 for name in sink_names}
        #: Records a sink raised on (a filter or emit() that raised), not written.
        self.sink_failed: Dict[str, int] = {name: 0 for name in sink_names}
        self.bad_records = 0
        self.dropped_by_level: Dict[str, int] = {}
        self.dropped_by_process: Dict[int, int] = {}
        self.abandoned = 0
        self.ledger = Ledger()
        self.settled = 0
        self.lag = 0.0
        #: Drops each sink had when the listener last reported them.
        self.sink_drops_reported: Dict[str, int] = {name: 0 for name in sink_names}
        #: Records that reached the hub and that no sink took (see Listener.unrouted).
        self.unrouted = 0
        self.unrouted_first: Optional[str] = None
        self.unrouted_reported = False

    def sink_dropped(self, name: str, sink: logging.Handler) -> int:
        """What ``sink`` accepted and did not write: its own count plus what raised."""
        own = getattr(sink, "dropped", 0)
        return self.sink_failed.get(name, 0) + (own if isinstance(own, int) else 0)

    def add_drops(self, pid: int, counts: Dict[str, int]) -> None:
        for level, count in counts.items():
            self.dropped_by_level[level] = self.dropped_by_level.get(level, 0) + count
            _bounded.add(self.dropped_by_process, pid, count, _bounded.by_pid)


class Receiver(threading.Thread):
    """Drains the pipe into the backlog until it reads the stop marker."""

    def __init__(
        self,
        channel: transport.Channel,
        backlog: Backlog,
        counters: Counters,
        reporter: Reporter,
        stop_token: bytes,
    ) -> None:
        super().__init__(name="forklog-receiver", daemon=True)
        assert channel.read_fd is not None
        self._fd = channel.read_fd
        self._backlog = backlog
        self._counters = counters
        self._reporter = reporter
        self._stop_token = stop_token
        self.frames = transport.FrameReader()
        self.deadline: Optional[float] = None  # set by Hub.stop
        self.abandoned_bytes = 0

    #: Between reads the receiver sleeps, so that records gather: every
    #: wake-up of a master thread takes a CPU from a worker, often in the
    #: middle of a log call, and a read of hundreds of records costs the
    #: master no more than a read of a few. It sleeps until the pipe should
    #: hold 1/GATHER_SHARE of its capacity at the rate of the last read,
    #: GATHER_LEAST to GATHER_MOST seconds (the most shrinks with a pipe
    #: under 1 MiB), and not at all once a read finds that much. A wake-up
    #: after a quiet spell sleeps GATHER_LEAST: a burst may follow. The most
    #: is no longer because bursts of large records (5 KB) from many threads
    #: fill a pipe in milliseconds (tests/integration/test_gunicorn.py).
    GATHER_LEAST = 0.001
    GATHER_MOST = 0.005
    GATHER_SHARE = 8
    #: One read takes what the pipe holds, up to this much (see run).
    READ_MOST = 4 << 20

    def _past_deadline(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def run(self) -> None:
        threads.background()
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        capacity = transport.pipe_capacity(self._fd)
        enough = capacity // self.GATHER_SHARE
        most = self.GATHER_MOST * min(1.0, capacity / (1 << 20))
        last_expire = last_read = time.monotonic()
        pause = 0.0
        data = b""
        try:
            while not self._past_deadline():
                # Each system call here gives up the GIL and waits to win it
                # back, while the listener or the master's own code computes,
                # often far longer than the call (tens of ms while gunicorn
                # forks workers at a HUP and every CPU is busy). So one read
                # takes the whole pipe, and the pipe is polled only when the
                # last read found it empty: a full pipe read 16 KiB at a time
                # paid that wait per chunk, and workers dropped records.
                try:
                    if not data:  # the last read found the pipe empty: wait for a write
                        poller.poll(250)
                    if pause:
                        time.sleep(pause)
                    data = os.read(self._fd, self.READ_MOST)
                except (BlockingIOError, InterruptedError):
                    data = b""
                now = time.monotonic()
                pause = self.pause(len(data), now - last_read, enough, most)
                last_read = now
                if now - last_expire > 1.0:
                    self.frames.expire(now)
                    last_expire = now
                if data and self._deliver(data):
                    return
            self.abandoned_bytes = transport.pipe_backlog(self._fd)
        except BaseException as exc:  # noqa: BLE001 - report, never die silently
            self._reporter.write(f"forklog: the receiver thread failed: {exc!r}")
        finally:
            self._backlog.close()

    @classmethod
    def pause(cls, read: int, interval: float, enough: int, most: float) -> float:
        """How long to let records gather, after reading ``read`` bytes ``interval`` s after the last read."""
        if read >= enough:
            return 0.0
        if not read:
            return cls.GATHER_LEAST  # after a quiet spell: a burst may follow
        # The time the pipe takes to hold `enough` at the rate of the last read.
        return max(cls.GATHER_LEAST, min(most, enough * interval / read))

    def _deliver(self, data: bytes) -> bool:
        """Queue the records in ``data``; True once the stop marker is seen."""
        frames = self.frames
        before = (frames.garbage_bytes, frames.bad_frames)
        controls = frames.control_frames
        stop = False
        items: List[Item] = frames.feed(data)
        if frames.control_frames != controls:  # not only records: look at each
            records = items
            items = []
            for item in records:
                flags, writer, boot, seq, payload = item
                if not flags & transport.CONTROL:
                    items.append(item)
                    continue
                if payload == self._stop_token:
                    stop = True
                    break
                if (
                    payload.startswith(EXIT_MARK)
                    and (len(payload) - len(EXIT_MARK)) % 4 == 0
                    and len(payload) > len(EXIT_MARK)
                ):
                    start = len(EXIT_MARK)
                    gone = int.from_bytes(payload[start : start + 4], "little")
                    boots = _boots(payload[start + 4 :])
                    frames.expire(pid=gone, boots=boots)
                    items.append((EXITED, gone, 0, 0, payload[start + 4 :]))
                elif payload.startswith(transport.DROPS_MARK):
                    items.append((DROPS, writer, boot, seq, payload))  # in order with the writer's records
        if items and not self._backlog.put_many(items, self._past_deadline):
            return False
        if (frames.garbage_bytes, frames.bad_frames) != before:
            self._reporter.report(
                "garbage",
                f"skipped {frames.garbage_bytes} bytes that were not forklog frames "
                f"({frames.bad_frames} bad frames in all)",
            )
        return stop


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
        dispatch_lock: threads.DispatchLock,
        channel: transport.Channel,
        targets: Optional[Targets] = None,
    ) -> None:
        super().__init__(name="forklog-listener", daemon=True)
        #: The sinks of the handlers the processes adopted (see forklog.master.targets).
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
        self._renderers: Dict[int, Tuple[Tuple[Any, ...], Optional[formatters.Renderer]]] = {}
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
        threads.background()
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
                    self.dispatch_batch(batch)
                    self._flush_batched()
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
                    self._counters.sink_errors[name] += 1
                    self._reporter.report(f"sink:{name}", f"sink {name} failed to flush: {exc!r}")
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
            boots = _boots(payload)
            lost = counters.ledger.close(pid, self._release_slots(pid, boots), boots)
            if lost is not None:
                counters.settled += 1
                self._report_loss(pid, lost, "killed")
            return
        counters.received += 1
        counters.ledger.received(pid, boot, seq)
        try:
            if payload[:1] == _target.TARGET_BYTE:
                line = _target.decode(payload)
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
            counts = transport.decode_drops(payload)
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
            lane = None if tainted else self._lane(sink)
            if lane is not None and isinstance(sink, BufferedSink) and sink.refusing():
                # Full (its server is down) when the batch starts: it refuses the
                # batch, counted in one go at its end.
                refused: List[Tuple[str, int]] = []
                self._down.append((sink, refused))
                lane = _down_lane(refused.append)
            if lane is None and (sink.filters or not isinstance(sink, BufferedSink)):
                tainted = True
            fast = fast or lane is not None
            plan.append((name, sink, lane))
        return plan if fast else None

    def line_formatter(self, sink: logging.Handler) -> Optional[logging.Formatter]:
        """``sink``'s formatter if the workers can make its lines (:mod:`~forklog.master.lines`)."""
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
                buffered.append((name, sink, sink.level, down.get(id(sink))))
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

    def _renderer(self, formatter: logging.Formatter) -> Optional[formatters.Renderer]:
        key = formatters.renderer_key(formatter)
        cached = self._renderers.get(id(formatter))
        if cached is not None and cached[0] == key:
            return cached[1]
        try:
            renderer = formatters.line_renderer(formatter)
        except Exception:  # noqa: BLE001 - a formatter set up in a way not foreseen: the slow path
            renderer = None
        if len(self._renderers) > 64:
            self._renderers.clear()
        self._renderers[id(formatter)] = (key, renderer)
        return renderer

    def _lane(self, sink: logging.Handler) -> Optional[Lane]:
        """``sink``'s fast lane, if it is a file or stream sink whose line the fields make alike.

        A buffered sink's lane only refuses early: when its buffer is full
        (its server is down), the drop is counted from the fields, without
        making the LogRecord it would not keep.
        """
        kind = type(sink)
        patched = "emit" in sink.__dict__ or "format" in sink.__dict__ or "emit_line" in sink.__dict__
        if sink.filters or kind.format is not logging.Handler.format or patched:
            return None
        if isinstance(sink, BufferedSink):
            return _buffered_lane(sink)
        render = self._renderer(sink.formatter or logging._defaultFormatter)  # type: ignore[attr-defined]
        if render is None:
            return None
        emit = sink.emit
        if kind.emit is RotatingFileSink.emit and kind.emit_line is RotatingFileSink.emit_line:  # type: ignore[attr-defined]
            emit_line = sink.emit_line  # type: ignore[attr-defined]

            def file_lane(fields: Tuple[Any, ...], pid: int, exc_text: Any) -> Optional[Callable[..., Any]]:
                try:
                    line = render(fields, pid, exc_text)
                except Exception:  # noqa: BLE001 - emit() formats again, and counts and reports it
                    return emit
                return None if emit_line(line) else emit

            return file_lane
        if kind.emit in _STREAM_EMITS:
            stream_sink: logging.StreamHandler[Any] = sink  # type: ignore[assignment]

            def stream_lane(fields: Tuple[Any, ...], pid: int, exc_text: Any) -> Optional[Callable[..., Any]]:
                # StreamHandler.emit, given the line.
                stream = stream_sink.stream
                if stream is None:
                    return emit  # a FileHandler that opens its file on the first record
                try:
                    line = render(fields, pid, exc_text)
                except Exception:  # noqa: BLE001
                    return emit
                try:
                    stream.write(line + stream_sink.terminator)
                    stream_sink.flush()
                except RecursionError:
                    raise
                except Exception:  # noqa: BLE001 - as emit() does
                    return stream_sink.handleError
                return None

            return stream_lane
        return None

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
            if fields[1] == "forklog" or not wire.plain_fields(fields):
                # The hub's own records (drop summaries the ledger must see), or
                # fields encode() does not write: the LogRecord path.
                self._deliver(wire.record_from_fields(fields, pid), pid, boot)
                return
        except Exception as exc:  # noqa: BLE001
            counters.bad_records += 1
            self._reporter.report("decode", f"skipped an undecodable record from pid {pid}: {exc}")
            return
        self._last_created = fields[5]
        levelno = fields[2]
        exception = fields[14]
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
                counters.sink_errors[name] += 1
                counters.sink_failed[name] += 1
                self._reporter.report(f"sink:{name}", f"sink {name} failed on a record: {exc!r}")
        if not taken:
            self.unrouted(fields[1], fields[3])

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
                counters.sink_errors[name] += 1
                counters.sink_failed[name] += 1
                self._reporter.report(f"sink:{name}", f"sink {name} failed on a record: {exc!r}")
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


def _boots(data: bytes) -> Optional[Set[int]]:
    """The boots an exit marker names, or None (all of the pid's)."""
    boots = {int.from_bytes(data[i : i + 4], "little") for i in range(0, len(data) - len(data) % 4, 4)}
    return boots or None


def _down_lane(refuse: Callable[[Tuple[str, int]], None]) -> Lane:
    def down_lane(fields: Tuple[Any, ...], pid: int, exc_text: Any) -> Optional[Callable[..., Any]]:
        refuse((fields[3], pid))
        return None

    return down_lane


def _buffered_lane(sink: BufferedSink) -> Lane:
    refuse, emit = sink.refuse, sink.emit

    def buffered_lane(fields: Tuple[Any, ...], pid: int, exc_text: Any) -> Optional[Callable[..., Any]]:
        return None if refuse(fields[3], pid) else emit

    return buffered_lane
