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
import logging
import os
import select
import threading
import time
from typing import Callable, Deque, Dict, List, Optional, Sequence, Tuple

from forklog import transport, wire
from forklog.master.ledger import Ledger, process_is_gone
from forklog.master.report import Reporter
from forklog.master.watch import Watch

__all__ = ["Backlog", "Counters", "Listener", "Receiver"]

Item = Tuple[int, int, int, int, bytes]  # kind, pid, boot, seq, payload
RECORD = 0
EXITED = 1  # the process is gone and everything it wrote is ahead of this item

#: The control frame that tells the reader a process is gone: prefix + pid.
EXIT_MARK = b"exit"


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
            batch: List[Item] = []
            items = self._items
            while items and len(batch) < limit:
                item = items.popleft()
                self._bytes -= len(item[4])
                batch.append(item)
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

    def sink_dropped(self, name: str, sink: logging.Handler) -> int:
        """What ``sink`` accepted and did not write: its own count plus what raised."""
        own = getattr(sink, "dropped", 0)
        return self.sink_failed.get(name, 0) + (own if isinstance(own, int) else 0)

    def add_drops(self, pid: int, counts: Dict[str, int]) -> None:
        for level, count in counts.items():
            self.dropped_by_level[level] = self.dropped_by_level.get(level, 0) + count
            self.dropped_by_process[pid] = self.dropped_by_process.get(pid, 0) + count


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

    def _past_deadline(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def run(self) -> None:
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        last_expire = time.monotonic()
        try:
            while not self._past_deadline():
                try:
                    poller.poll(250)
                    data = os.read(self._fd, 1 << 20)
                except (BlockingIOError, InterruptedError):
                    data = b""
                now = time.monotonic()
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

    def _deliver(self, data: bytes) -> bool:
        """Queue the records in ``data``; True once the stop marker is seen."""
        frames = self.frames
        before = (frames.garbage_bytes, frames.bad_frames)
        items: List[Item] = []
        stop = False
        for flags, pid, boot, seq, payload in frames.feed(data):
            if flags & transport.CONTROL:
                if payload == self._stop_token:
                    stop = True
                    break
                if payload.startswith(EXIT_MARK) and len(payload) == len(EXIT_MARK) + 4:
                    gone = int.from_bytes(payload[len(EXIT_MARK) :], "little")
                    frames.expire(pid=gone)
                    items.append((EXITED, gone, 0, 0, b""))
            else:
                items.append((RECORD, pid, boot, seq, payload))
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

    def __init__(
        self,
        backlog: Backlog,
        sinks: Sequence[Tuple[str, logging.Handler]],
        counters: Counters,
        reporter: Reporter,
        *,
        dispatch_lock: threading.Lock,
        channel: transport.Channel,
    ) -> None:
        super().__init__(name="forklog-listener", daemon=True)
        self._backlog = backlog
        self._sinks = list(sinks)
        self._counters = counters
        self._reporter = reporter
        self._dispatch_lock = dispatch_lock
        self._channel = channel
        self._owner = os.getpid()
        self._exit_sent: Dict[int, float] = {}
        self.deadline: Optional[float] = None  # set by Hub.stop
        self.abandoned = 0
        self._last_created = 0.0
        #: Set by the hub when a stats record or a Prometheus file is wanted.
        self.watch: Optional[Watch] = None

    def run(self) -> None:
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
                next_check = now + self.LIVENESS_INTERVAL
            if self.watch is not None:
                self.watch.tick(now)
            batch = backlog.get_batch(self.BATCH, 0.25)
            if batch:
                with self._dispatch_lock:
                    for item in batch:
                        self.dispatch(item)
                    self._flush_batched()
                if self._last_created:
                    self._counters.lag = max(0.0, time.time() - self._last_created)
            elif backlog.closed and not len(backlog):
                self._settle_live_writers()
                with self._dispatch_lock:
                    self.report_sink_drops()
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

    def exited(self, pid: int, timeout: float = 0.0) -> bool:
        """Queue the marker that settles ``pid``'s account once its records are read."""
        if self._channel.send_control(EXIT_MARK + pid.to_bytes(4, "little"), timeout):
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
        if kind == EXITED:
            self._exit_sent.pop(pid, None)
            lost = counters.ledger.close(pid, self._release_slots(pid))
            if lost is not None:
                counters.settled += 1
                self._report_loss(pid, lost, "killed")
            return
        counters.received += 1
        counters.ledger.received(pid, boot, seq)
        try:
            record = wire.decode(payload, pid)
        except Exception as exc:  # noqa: BLE001
            counters.bad_records += 1
            self._reporter.report("decode", f"skipped an undecodable record from pid {pid}: {exc}")
            return
        dropped = record.__dict__.get("forklog_dropped")
        if dropped and record.name == "forklog" and isinstance(dropped, dict):
            counts = {str(k): int(v) for k, v in dropped.items()}
            counters.add_drops(pid, counts)
            counters.ledger.dropped(pid, boot, sum(counts.values()))
        self._last_created = record.created
        self._write(record)

    def write(self, record: logging.LogRecord) -> None:
        """Write a record of the hub's own to every sink (from the listener thread)."""
        with self._dispatch_lock:
            self._write(record)

    def _write(
        self, record: logging.LogRecord, sinks: Optional[Sequence[Tuple[str, logging.Handler]]] = None
    ) -> None:
        counters = self._counters
        levelno = record.levelno
        for name, sink in self._sinks if sinks is None else sinks:
            if levelno < sink.level:
                continue
            try:
                if sink.filters:
                    if sink.handle(record):
                        counters.written[name] += 1
                else:
                    # The listener is the sink's only writer (reopen() waits
                    # for the dispatch lock), so the handler's lock is moot.
                    sink.emit(record)
                    counters.written[name] += 1
            except Exception as exc:  # noqa: BLE001 - a filter or a handle() that raised
                counters.sink_errors[name] += 1
                counters.sink_failed[name] += 1
                self._reporter.report(f"sink:{name}", f"sink {name} failed on a record: {exc!r}")

    def report_sink_drops(self) -> None:
        """Say in the log (through every sink) what a sink could not write since last time.

        Called by the listener thread, and by ``Hub.stop()`` once the
        listener has finished and the buffered sinks are closed.
        """
        reported = self._counters.sink_drops_reported
        for name, sink in self._sinks:
            dropped = self._counters.sink_dropped(name, sink)
            if dropped <= reported.get(name, 0):
                continue
            count = dropped - reported.get(name, 0)
            reported[name] = dropped
            record = logging.LogRecord(
                "forklog",
                logging.WARNING,
                __file__,
                0,
                "forklog: sink %s could not write %d records (%d in all)",
                (name, count, dropped),
                None,
                "sink_drops",
            )
            record.forklog_sink_dropped = {"sink": name, "count": count, "total": dropped}
            self._write(record, [(n, s) for n, s in self._sinks if not getattr(s, "closed", False)])

    def _release_slots(self, pid: int) -> Dict[int, int]:
        """What the scoreboard says ``pid`` numbered, by boot; its slots are freed."""
        board = self._channel.scoreboard
        numbered: Dict[int, int] = {}
        if board is not None:
            for slot, boot, count in board.claimed().get(pid, []):
                numbered[boot] = count
                board.release(slot)
        return numbered

    def _report_loss(self, pid: int, lost: int, why: str) -> None:
        if not lost:
            return
        record = logging.LogRecord(
            "forklog",
            logging.WARNING,
            __file__,
            0,
            "forklog: lost %d records from pid %d (%s)",
            (lost, pid, why),
            None,
            "lost",
        )
        record.forklog_lost = {"pid": pid, "count": lost}
        self._write(record)

    def _settle_live_writers(self) -> None:
        """At stop: what live writers sent and never arrived is lost too."""
        ledger = self._counters.ledger
        with self._dispatch_lock:
            for pid in ledger.pids():
                if pid != self._owner:
                    lost = ledger.close(pid, self._release_slots(pid))
                    self._report_loss(pid, lost or 0, "still running when the hub stopped")
