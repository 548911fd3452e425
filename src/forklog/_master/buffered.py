"""Sinks that can block get their own bounded buffer and thread (H14).

The listener is the single writer of every sink, so a sink that waits (a
syslog server that stopped answering, an HTTP collector, a user's handler
that posts to a web service) would hold back every other sink, then the
backlog, then the workers. Such sinks are :class:`BufferedSink`\\ s: the
listener only appends the record to the sink's own bounded buffer, and the
sink's thread delivers from there, reconnecting with backoff. When the
buffer is full the record is dropped and counted by level and process; the
hub reports the count in the log and in ``stats()``.

The hub wraps every sink that is not a local file or stream in
:class:`Isolated` (a :class:`BufferedSink` around any ``logging.Handler``).
Network sinks written for forklog (syslog, OTLP) subclass
:class:`BufferedSink` directly and implement :meth:`BufferedSink.deliver`
for a whole batch.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import threading
import time
from typing import Callable, Counter, Deque, Dict, List, Optional, Tuple, Union

from forklog import _bounded
from forklog._master import scheduling

__all__ = ["BufferedSink", "DeliveryError", "Isolated", "needs_isolation"]


class DeliveryError(OSError):
    """``deliver()`` failed after delivering the first ``delivered`` records of the batch."""

    def __init__(self, message: str, delivered: int = 0) -> None:
        super().__init__(message)
        self.delivered = delivered


class BufferedSink(logging.Handler):
    """A sink with a bounded buffer, drained by its own thread.

    Subclasses implement :meth:`deliver` (send a batch; raise to have it
    retried after a backoff) and may implement :meth:`disconnect`. ``emit``
    never blocks: it appends, or counts a drop when ``capacity`` records are
    already waiting. ``close()`` delivers what is buffered for at most
    ``close_timeout`` seconds, then counts the rest as dropped.
    """

    #: Retry a failed batch (after a backoff) until it is delivered or the sink closes.
    retry = True

    def __init__(
        self,
        level: int = logging.NOTSET,
        *,
        capacity: int = 10_000,
        batch_size: int = 256,
        close_timeout: float = 5.0,
        max_backoff: float = 5.0,
    ) -> None:
        super().__init__(level)
        if capacity < 1:
            raise ValueError(f"{type(self).__name__}: capacity={capacity!r}: expected a positive integer")
        self.capacity = capacity
        self.batch_size = batch_size
        self.close_timeout = close_timeout
        self.max_backoff = max_backoff
        self._buffer: Deque[logging.LogRecord] = collections.deque()
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._waiting = False  # the thread waits for records: emit() must notify
        self._thread: Optional[threading.Thread] = None
        self._owner = 0
        self._closing = False
        self._in_flight = 0
        self._batch: List[logging.LogRecord] = []  # being delivered, owned by the thread
        #: Records handed to :meth:`deliver` that it accepted.
        self.delivered = 0
        # Records this sink could not deliver, by (level name, pid): counted
        # under the lock by either thread, and without it by the listener
        # alone when the buffer is full (refuse()).
        self._drops: Dict[Tuple[str, int], int] = collections.defaultdict(int)
        self._refusals: Counter[Tuple[str, int]] = collections.Counter()
        #: Failed deliveries (each retried).
        self.failures = 0
        #: Says a failed delivery and what became of its records (the hub sets
        #: it: forklog._master.targets.take_over); otherwise ``handleError``.
        self.say_delivery: Optional[Callable[[str], None]] = None

    # -- the listener's side -------------------------------------------------

    @property
    def drops(self) -> Dict[Tuple[str, int], int]:
        """Records this sink could not deliver, by (level name, pid)."""
        merged = collections.Counter(dict(self._drops))
        merged.update(dict(self._refusals))
        return dict(merged)

    @property
    def dropped(self) -> int:
        """Records this sink accepted but could not deliver."""
        return sum(dict(self._drops).values()) + sum(dict(self._refusals).values())

    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called: records given to it now are dropped."""
        return self._closing

    @property
    def pending(self) -> int:
        """Records waiting in the buffer or being delivered."""
        return len(self._buffer) + self._in_flight

    def emit(self, record: logging.LogRecord) -> None:
        # The listener calls this for every record, also while the sink is
        # down and drops them all: the condition's bare lock, the drop counted
        # inline, and a notify only when the thread waits (each saves a few
        # hundred ns of the listener's time, which the files share).
        with self._lock:
            if self._closing or len(self._buffer) >= self.capacity:
                _bounded.add(
                    self._drops, (record.levelname, record.process or 0), 1, _bounded.by_level_and_pid
                )
                return
            self._buffer.append(record)
            if self._thread is None or self._owner != os.getpid():
                self._start()
            if self._waiting:
                self._cond.notify()

    def refuse(self, levelname: str, pid: int) -> bool:
        """Count a drop and say so if a record would find the buffer full (or the sink closed).

        For the listener only, the one thread that adds to the buffer: a
        buffer it finds full stays full until it adds again, so no lock.
        """
        if self._closing or len(self._buffer) >= self.capacity:
            self._refusals[(levelname, pid)] += 1
            return True
        return False

    def refusing(self) -> bool:
        """Whether a record given now would be dropped (the buffer full, or the sink closed)."""
        return self._closing or len(self._buffer) >= self.capacity

    def count_refused(self, refused: Union[List[Tuple[str, int]], Dict[Tuple[str, int], int]]) -> None:
        """Count records the listener did not give it, found :meth:`refusing`.

        ``refused``: (level name, pid) for each, or how many of each.
        """
        self._refusals.update(refused)
        _bounded.fold(self._refusals, _bounded.by_level_and_pid)

    def handle(self, record: logging.LogRecord) -> bool:
        # The filters run in the sink's thread (they are the wrapped handler's
        # business); here only the level and the buffer.
        self.emit(record)
        return True

    def flush(self) -> None:
        """Nothing to do in the listener: the sink's thread delivers on its own."""

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        thread = self._thread
        if thread is not None and self._owner == os.getpid():
            thread.join(self.close_timeout)
        with self._cond:
            while self._buffer:
                self._count_drop(self._buffer.popleft())
            if thread is not None and thread.is_alive():
                # Stuck in deliver(): its batch is abandoned with the sink.
                for record in self._batch:
                    self._count_drop(record)
                self._batch = []
                self._in_flight = 0
        if thread is None:
            self._disconnect_quietly()  # a thread lets go of the connection as it ends
        super().close()

    def _start(self) -> None:
        self._owner = os.getpid()
        self._thread = threading.Thread(
            target=self._run, name=f"forklog-sink-{self.get_name() or type(self).__name__}", daemon=True
        )
        self._thread.start()

    def _count_drop(self, record: logging.LogRecord) -> None:
        _bounded.add(self._drops, (record.levelname, record.process or 0), 1, _bounded.by_level_and_pid)

    # -- the sink's thread ---------------------------------------------------

    def deliver(self, records: List[logging.LogRecord]) -> None:
        """Send ``records`` in order; raise (``DeliveryError`` for a partial send) to retry."""
        raise NotImplementedError

    def disconnect(self) -> None:
        """Drop the connection after a failure; the next ``deliver`` reconnects."""

    def _run(self) -> None:
        scheduling.background()
        batch = self._batch
        backoff = 0.0
        close_deadline: Optional[float] = None
        while True:
            fresh = finished = False
            with self._cond:
                if not batch:
                    while not self._buffer and not self._closing:
                        self._waiting = True
                        self._cond.wait()
                        self._waiting = False
                    if not self._buffer:
                        # Closing, nothing left. close() may have stopped waiting
                        # for this thread: the connection is let go here too.
                        finished = True
                    take = min(self.batch_size, len(self._buffer))
                    batch = self._batch = [self._buffer.popleft() for _ in range(take)]
                    self._in_flight = len(batch)
                    fresh = True
                if self._closing and close_deadline is None:
                    close_deadline = time.monotonic() + self.close_timeout
            if finished:
                self._disconnect_quietly()
                return
            if fresh and self.filters:
                # Once per batch, before any attempt: a retry must not run the
                # filters again, and one that raises fails its record, not the batch.
                batch[:] = [record for record in batch if self._admit(record)]
                with self._cond:
                    self._in_flight = len(batch)
                if not batch:
                    continue
            try:
                self.deliver(batch)
            except Exception as exc:  # noqa: BLE001 - counted, reported, retried
                done = exc.delivered if isinstance(exc, DeliveryError) else 0
                self.delivered += done
                del batch[:done]
                self.failures += 1
                with self._cond:
                    abandoned = batch is not self._batch  # close() gave up on it and counted it
                backoff = min(self.max_backoff, backoff * 2 if backoff else 0.1)
                if (
                    abandoned
                    or not self.retry
                    or (close_deadline is not None and time.monotonic() >= close_deadline)
                ):
                    self._report_delivery(batch, f"to deliver: {len(batch)} records dropped (counted)")
                    self._disconnect_quietly()
                    with self._cond:
                        if not abandoned:
                            for record in batch:
                                self._count_drop(record)
                            self._batch = []
                            self._in_flight = 0
                        batch = []
                    continue
                held = f"{len(batch)} records held, sent again in {backoff:.1f} s"
                self._report_delivery(batch, f"to deliver: {held} ({self.again_note})")
                self._disconnect_quietly()
                retry_at = time.monotonic() + backoff
                if close_deadline is not None:
                    retry_at = min(retry_at, close_deadline)
                with self._cond:
                    # emit() notifies on every record: only close() ends the wait early
                    # (for one more try at once), or a flood would turn the backoff into
                    # a retry per record. Closing, the backoff goes on to the deadline.
                    closing = self._closing
                    while (left := retry_at - time.monotonic()) > 0 and self._closing == closing:
                        self._cond.wait(left)
                continue
            backoff = 0.0
            self.delivered += len(batch)
            with self._cond:
                batch = self._batch = []
                self._in_flight = 0

    def _admit(self, record: logging.LogRecord) -> bool:
        """The sink's filters on one record; a filter that raises fails that record, counted."""
        try:
            return bool(self.filter(record))
        except Exception:  # noqa: BLE001 - a filter's bug is one record's loss, never the batch's
            self.failures += 1
            self._report_failure(record)
            with self._cond:
                self._count_drop(record)
            return False

    #: What a record sent again may do (a subclass that knows says more).
    again_note = "a record sent again may arrive twice"

    def _report_delivery(self, batch: List[logging.LogRecord], what: str) -> None:
        """Say a failed delivery (the exception being handled) and what became of ``batch``."""
        say = self.say_delivery
        if say is None:
            self._report_failure(batch[0] if batch else None)
        else:
            say(what)

    def _report_failure(self, record: Optional[logging.LogRecord]) -> None:
        # handleError reads the exception being handled; the hub replaces it
        # with a counted, rate-limited report on stderr.
        if record is not None:
            self.handleError(record)

    def _disconnect_quietly(self) -> None:
        with contextlib.suppress(Exception):  # already failing; nothing more to say
            self.disconnect()


class Isolated(BufferedSink):
    """Any ``logging.Handler`` behind a bounded buffer and its own thread.

    The wrapped handler keeps its level, filters and formatter; its
    ``handle()`` runs in this sink's thread only. It reports its own errors
    through ``handleError`` as usual, so a failed record is not retried.
    """

    retry = False

    def __init__(
        self, handler: logging.Handler, *, capacity: int = 10_000, close_timeout: float = 5.0
    ) -> None:
        super().__init__(handler.level, capacity=capacity, close_timeout=close_timeout)
        self.handler = handler
        self.set_name(handler.get_name())

    def deliver(self, records: List[logging.LogRecord]) -> None:
        handle = self.handler.handle
        for record in records:
            try:
                handle(record)
            except Exception:  # noqa: BLE001 - a filter that raised; handle() itself does not
                self.failures += 1
                self._report_failure(record)
                with self._cond:
                    self._count_drop(record)

    def close(self) -> None:
        super().close()
        thread = self._thread
        if thread is not None and thread.is_alive():
            # Stuck in the handler's emit(), holding its lock: flush() would
            # wait on it, and so would logging.shutdown() at exit, forever.
            _forget_at_exit(self.handler)
            return
        try:
            self.handler.flush()
        finally:
            self.handler.close()

    def __repr__(self) -> str:
        return f"<Isolated {self.handler!r}>"


def _forget_at_exit(handler: logging.Handler) -> None:
    """Take ``handler`` out of the list ``logging.shutdown()`` flushes and closes at exit."""
    lock = getattr(logging, "_lock", None)
    refs = getattr(logging, "_handlerList", None)
    if lock is None or not isinstance(refs, list):
        return
    with lock:
        refs[:] = [ref for ref in refs if ref() is not handler]


def needs_isolation(handler: logging.Handler) -> bool:
    """Whether the listener should not call ``handler`` itself.

    Local files and streams stay on the listener: they are the primary sinks
    and the listener's backlog is already their buffer. Everything else may
    wait on something outside the process (a socket, a service) and gets a
    buffer and thread of its own, unless it says it never blocks
    (``forklog_inline = True``).
    """
    if isinstance(handler, BufferedSink) or getattr(handler, "forklog_inline", False):
        return False
    return not isinstance(handler, (logging.StreamHandler, logging.NullHandler))
