"""The hub: the queue and the only listener, owned by one process.

Runs in the gunicorn master or in the parent of a process pool. Lifecycle
rules (DESIGN §1, STYLE "One owner"):

* ``start()`` records the owner pid; a second ``start()`` raises.
* ``stop()`` in any process other than the owner does nothing (H17: a
  worker that inherited an ``atexit`` or runs ``worker_exit`` cannot stop
  the master's listener); a second ``stop()`` is harmless.
* ``stop(timeout)`` drains every record enqueued before it was called, joins
  the threads, then flushes and closes the sinks, all within ``timeout``
  (H3, H8), and says on stderr what it had to abandon.
* Across ``fork()`` the listener is quiesced (it is between two writes), and
  a child never flushes or closes a sink it inherited (H6).
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import time
import weakref
from typing import Dict, List, Optional, Sequence, Tuple

from forklog import _bounded, _fork, _renderers
from forklog._master import scheduling
from forklog._master.attach_server import AttachServer
from forklog._master.backlog import Backlog
from forklog._master.buffered import BufferedSink, Isolated, needs_isolation
from forklog._master.counters import Counters
from forklog._master.listener import Listener
from forklog._master.receiver import Receiver
from forklog._master.sinks import Sink, named_sinks
from forklog._master.stats import HubStats, snapshot
from forklog._master.targets import Targets, forget_handler, reopen_file, take_over
from forklog._master.watch import StatsWatch
from forklog._stderr import Reporter
from forklog._wire import framing
from forklog._wire.lines import MAX_LINES
from forklog._worker.channel import Channel
from forklog._worker.handler import ForkHandler

__all__ = ["Hub", "HubStats", "Sink"]

#: How long from its start a fork waits for the listener's batch to end. A
#: batch that has run longer is stuck in a sink (a hung disk): gunicorn's
#: forks then go ahead at once (scheduling.DispatchLock.acquire_for_fork); a
#: child forked mid-batch lets go of the sinks' files without a flush.
FORK_QUIESCE_TIMEOUT = 0.1


_live_hubs: weakref.WeakSet[Hub] = weakref.WeakSet()


def _before_fork() -> None:
    for hub in list(_live_hubs):
        hub._quiesce()


def _after_fork_in_parent() -> None:
    for hub in list(_live_hubs):
        hub._resume()


def _after_fork_in_child() -> None:
    for hub in list(_live_hubs):
        hub._disown()


def _install_fork_hooks() -> None:
    # On first use, not at import.
    _fork.on_fork(
        before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child
    )


class Hub:
    """Owns the queue (``hub.queue``) and the only listener thread.

    ``handlers`` are the sinks: any ``logging.Handler``, or ``(name,
    handler)`` pairs to name them in :meth:`stats`. Each applies its own
    level. Only the listener thread ever calls them, except sinks that may
    block (anything but a local file or stream): each of those gets a
    bounded buffer and a thread of its own (:mod:`forklog._master.buffered`),
    so a stalled server never holds back the files.
    """

    def __init__(
        self,
        handlers: Sequence[Sink] = (),
        *,
        queue_size: int = 10_000,
        keep_level: int = logging.ERROR,
        keep_wait: float = 0.1,
        max_record_bytes: int = 1 << 20,
        max_backlog_bytes: int = 64 << 20,
        pipe_size: Optional[int] = None,
        stop_timeout: float = 5.0,
        stats_interval: float = 0.0,
        prometheus_file: Optional[str] = None,
    ) -> None:
        if queue_size < 1:
            raise ValueError(f"forklog.Hub: queue_size={queue_size!r}: expected a positive integer")
        if stats_interval < 0:
            raise ValueError(
                f"forklog.Hub: stats_interval={stats_interval!r}: expected seconds >= 0 (0 = no stats record)"
            )
        if keep_wait < 0:
            raise ValueError(f"forklog.Hub: keep_wait={keep_wait!r}: expected seconds >= 0")
        if max_record_bytes < framing.PIPE_BUF:
            raise ValueError(
                f"forklog.Hub: max_record_bytes={max_record_bytes!r}: expected at least {framing.PIPE_BUF}"
            )
        named = named_sinks(handlers)
        for _name, handler in named:
            # A sink that is also on a logger is never adopted there (forklog._worker.adoption).
            handler._forklog_sink = True  # type: ignore[attr-defined]
        self._sinks = [
            (name, Isolated(handler) if needs_isolation(handler) else handler) for name, handler in named
        ]
        levels = [handler.level for _name, handler in self._sinks]
        self.queue_size = queue_size
        self.stop_timeout = stop_timeout
        #: What every process puts records into; pass it to children.
        self.queue = Channel(
            keep_level=keep_level,
            keep_wait=keep_wait,
            max_record_bytes=max_record_bytes,
            level=min(levels) if levels else logging.NOTSET,
            pipe_size=pipe_size,
        )
        self._max_backlog_bytes = max_backlog_bytes
        self._owner: Optional[int] = None
        self._state = "new"  # new -> running -> stopped
        self._dispatch_lock = scheduling.DispatchLock()
        self._quiesced = False
        self._sources_locked = False
        self._reporter = Reporter()
        self._attach_server: Optional[AttachServer] = None
        self._counters = Counters([name for name, _h in self._sinks])
        self._backlog = Backlog(queue_size, max_backlog_bytes)
        self._receiver: Optional[Receiver] = None
        self._listener: Optional[Listener] = None
        self._stats_interval = stats_interval
        self._prometheus_file = os.fspath(prometheus_file) if prometheus_file else None
        self._watch: Optional[StatsWatch] = None
        self._lifecycle = threading.Lock()
        #: The sinks of the handlers the application configured, one per
        #: file or stream, opened as their lines arrive (forklog._master.targets).
        self.targets = Targets(self._counters, self._reporter)

    # -- lifecycle -------------------------------------------------------------

    @property
    def owner_pid(self) -> Optional[int]:
        return self._owner

    @property
    def running(self) -> bool:
        return self._state == "running" and self._owner == os.getpid()

    @property
    def sinks(self) -> List[Tuple[str, logging.Handler]]:
        return list(self._sinks)

    def start(self) -> Hub:
        with self._lifecycle:
            if self._state != "new":
                raise RuntimeError(f"forklog.Hub.start(): the hub is already {self._state}")
            if self.queue.read_fd is None:
                raise RuntimeError("forklog.Hub.start(): this hub was created in another process")
            self._owner = os.getpid()
            for name, handler in self._sinks:
                self._adopt(name, handler)
            self._receiver = Receiver(self.queue, self._backlog, self._counters, self._reporter)
            self.targets.registered = self._receiver.sources.registered
            self._listener = Listener(
                self._backlog,
                self._sinks,
                self._counters,
                self._reporter,
                dispatch_lock=self._dispatch_lock,
                channel=self.queue,
                targets=self.targets,
            )
            self._listener.reopen_sinks = self._reopen_sinks
            self._listener.live_writers = self._receiver.sources.writers
            if self._stats_interval > 0 or self._prometheus_file:
                self._watch = self._listener.watch = StatsWatch(
                    self.stats,
                    self._listener.write,
                    self._reporter,
                    interval=self._stats_interval,
                    prometheus_file=self._prometheus_file,
                )
            self._make_lines_in_workers(self._listener)
            self._receiver.start()
            self._listener.start()
            self._state = "running"
            _live_hubs.add(self)
            _install_fork_hooks()
            # A safety net for hosts that never call stop(): the owner drains at
            # exit. The pid check makes the copy a forked child inherits inert (H17).
            atexit.register(self._stop_at_exit)
        return self

    def _make_lines_in_workers(self, listener: Listener) -> None:
        """Let the emitting processes make the lines when every sink is a file or a stream.

        Formatting is most of a record's cost in the master, and the master
        is one process while the writers are many: each writer then sends
        its record's lines, one per distinct formatter, made with the
        listener's own renderers (:func:`forklog._wire.lines.encode_lines`), and the
        listener only writes them. Records with a traceback or a stack still
        travel as fields. Processes forked (or spawned) after this point do it.
        """
        if not listener.FAST_LANE or not self._sinks:
            return
        chosen: List[logging.Formatter] = []
        index: Dict[str, Tuple[int, logging.Formatter]] = {}
        fields_too = False
        for name, handler in self._sinks:
            if isinstance(handler, BufferedSink) and not handler.filters:
                fields_too = True  # syslog, OTLP: the fields travel with the lines
                continue
            formatter = listener.line_formatter(handler)
            if formatter is None:
                return  # a sink that needs the record: every record travels as fields
            position = next(
                (i for i, known in enumerate(chosen) if _renderers.same_lines(known, formatter)), len(chosen)
            )
            if position == len(chosen):
                chosen.append(formatter)
            index[name] = (position, formatter)
        if not chosen or len(chosen) > MAX_LINES:
            return  # no file or stream (or more distinct formats than a payload carries): the fields alone
        listener.lines.use(index)
        self.queue.line_formatters = tuple(chosen)
        self.queue.fields_with_lines = fields_too

    def _adopt(self, name: str, handler: logging.Handler) -> None:
        take_over(name, handler, self._counters, self._reporter)

    def stop(self, timeout: Optional[float] = None) -> Optional[HubStats]:
        """Drain, join, then flush and close the sinks, within ``timeout`` seconds.

        Returns the final stats, or None when called in a process that does
        not own the hub or when the hub is not running.
        """
        with self._lifecycle:
            if self._owner != os.getpid() or self._state != "running":
                return None
            self._state = "stopped"
        if self._attach_server is not None:  # nothing attaches to a stopping hub
            self._attach_server.close()
        timeout = self.stop_timeout if timeout is None else timeout
        deadline = time.monotonic() + max(0.0, timeout)
        receiver, listener = self._receiver, self._listener
        assert receiver is not None and listener is not None
        # The owner's own unreported drops go out first, then the marker:
        # everything written before it is ahead of it in the pipe.
        self.queue.flush(max(0.0, min(0.5, deadline - time.monotonic())))
        # Made now, after every fork: no worker holds it to stop the hub with (issue 21, item 2).
        token = os.urandom(16)
        receiver.stop_token = token
        marker_sent = self.queue.send_control(token, max(0.0, deadline - time.monotonic()))
        # Leave a little of the budget for flushing and closing the sinks.
        drain_deadline = deadline - min(0.5, timeout * 0.1)
        receiver.deadline = drain_deadline
        listener.deadline = drain_deadline
        if not marker_sent:
            receiver.deadline = time.monotonic()
        receiver.join(max(0.0, drain_deadline - time.monotonic()))
        listener.join(max(0.0, drain_deadline - time.monotonic()) + 0.05)
        abandoned = listener.abandoned + len(self._backlog)
        if listener.is_alive():
            self._reporter.write(
                "forklog: stop() timed out while a sink was still writing; "
                f"{len(self._backlog)} queued records abandoned, sinks left open"
            )
        else:
            self._close_sinks(listener, deadline)
        self._counters.abandoned += abandoned
        self._report_unwritten(receiver.unread_by_process, "still in its pipe")
        self._report_unwritten(self._backlog.cleared, "queued")
        pipe_left = receiver.abandoned_bytes
        incomplete = receiver.frames.pending_partial
        if abandoned or pipe_left or incomplete or not marker_sent:
            self._reporter.write(
                f"forklog: stop() abandoned {abandoned} queued records, {pipe_left} unread bytes "
                f"and {incomplete} incomplete large records (timeout {timeout:g}s)"
            )
        stats = self.stats()
        if self._watch is not None:
            self._watch.write_prometheus(stats)
        _live_hubs.discard(self)
        atexit.unregister(self._stop_at_exit)  # a stopped hub (its sinks, their records) can be freed
        self.queue.close()
        return stats

    def _report_unwritten(self, counts: Dict[int, int], where: str) -> None:
        """Records a stop past its deadline left unwritten, by pid: lost, said on stderr, in the stats."""
        lost = self._counters.ledger.lost_by_process
        for pid, count in sorted(counts.items()):
            _bounded.add(lost, pid, count, _bounded.by_pid)
            self._reporter.write(
                f"forklog: lost {count} records from pid {pid} ({where} when stop() timed out)"
            )

    def _close_sinks(self, listener: Listener, deadline: float) -> None:
        # The buffered sinks first, each within what is left of the budget:
        # what they could not deliver is then reported through the files.
        for name, handler in self._sinks:
            if isinstance(handler, BufferedSink):
                handler.close_timeout = max(0.0, min(handler.close_timeout, deadline - time.monotonic()))
                before = handler.dropped
                self._close_sink(name, handler)
                left = handler.dropped - before + handler.pending
                if left:
                    self._reporter.write(
                        f"forklog: stop() abandoned {left} records in sink {name}'s buffer "
                        f"(timeout {handler.close_timeout:g}s)"
                    )
        listener.report_sink_drops()
        for name, handler in self._sinks:
            if not isinstance(handler, BufferedSink):
                wait = getattr(handler, "close_timeout", None)
                if isinstance(wait, (int, float)):
                    # A file sink waits for its gzip at close: within the budget too.
                    handler.close_timeout = min(wait, max(0.0, deadline - time.monotonic()))  # type: ignore[attr-defined]
                self._close_sink(name, handler)
        self.targets.close()

    def _close_sink(self, name: str, handler: logging.Handler) -> None:
        try:
            if handler.__dict__.pop("_forklog_flush", None) is not None:
                del handler.flush  # the handler's own flush again
            handler.flush()
            handler.close()
        except Exception as exc:  # noqa: BLE001
            self._reporter.write(f"forklog: closing sink {name} failed: {exc!r}")

    def _stop_at_exit(self) -> None:
        if self._owner == os.getpid():
            self.stop()

    def __enter__(self) -> Hub:
        if self._state == "new":
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- operations --------------------------------------------------------------

    def handler(self) -> logging.Handler:
        """A queue handler on this hub, for the owner's own loggers."""
        return ForkHandler(self.queue)

    def listen(self, group: Optional[int] = None) -> str:
        """The address processes it never forked attach at (``FORKLOG_HUB``; see attach_server)."""
        if self._attach_server is None:
            self._attach_server = AttachServer(self.queue, self._reporter, group, self.reopen)
        return self._attach_server.address

    def reopen(self) -> None:
        """Reopen every file sink (after logrotate moved the files; USR1). Never waits on a sink.

        Done at once when the listener is between two batches; otherwise the
        listener does it before its next batch (a sink stuck on a hung disk
        does not hold back gunicorn's signal handling).
        """
        if self._owner != os.getpid():
            return
        if self._dispatch_lock.acquire(blocking=False):
            try:
                self._reopen_sinks()
            finally:
                self._dispatch_lock.release()
        elif self._listener is not None:
            self._listener.reopen_pending = True

    def _reopen_sinks(self) -> None:
        """Under the dispatch lock: every file sink and adopted target opens its path again."""
        for name, handler in self._sinks:
            reopen_file(name, handler, self._reporter)
        self.targets.reopen()

    def process_exited(self, pid: int) -> None:
        """Told by the host (gunicorn ``child_exit``) that ``pid`` is gone.

        Its account is settled when the listener reaches this point of the
        queue, after everything the process wrote; a loss is reported then.
        """
        # Nothing to do: its pipe's end, read after everything it wrote, settles
        # it (forklog._master.sources); no frame and no call can settle a writer
        # before its records are in. Kept for hosts that call it.
        return

    def stats(self) -> HubStats:
        return snapshot(
            self._counters,
            receiver=self._receiver,
            backlog=self._backlog,
            listener=self._listener,
            sinks=self._sinks,
            targets=self.targets,
            channel=self.queue,
        )

    # -- fork ------------------------------------------------------------------

    def _quiesce(self) -> None:
        if self.running:
            self._quiesced = self._dispatch_lock.acquire_for_fork(FORK_QUIESCE_TIMEOUT)
            receiver = self._receiver
            # No writer's pipe half taken in while the child copies the descriptors.
            if receiver is not None and receiver.sources.lock.acquire(timeout=FORK_QUIESCE_TIMEOUT):
                self._sources_locked = True

    def _resume(self) -> None:
        if self._sources_locked and self._receiver is not None:
            self._sources_locked = False
            self._receiver.sources.lock.release()
        if self._quiesced:
            self._quiesced = False
            self._dispatch_lock.release()

    def _disown(self) -> None:
        """In a forked child: the sinks and threads belong to the parent; so do their files (H25)."""
        for _name, handler in self._sinks:
            forget_handler(handler)
            _fork.release_descriptors(handler)
        self.targets.release_in_child()
        if self._watch is not None:
            self._watch.release_in_child()
        if self._receiver is not None:
            self._receiver.sources.release_in_child()
        self._sources_locked = False
        self._dispatch_lock = scheduling.DispatchLock()
        self._lifecycle = threading.Lock()
        self._quiesced = False


def _current_exception() -> Optional[BaseException]:
    return sys.exc_info()[1]
