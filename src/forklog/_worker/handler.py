"""The worker side: a ``QueueHandler`` onto the hub's channel.

A log call in a worker encodes the record (:mod:`forklog._wire.records`) and writes
it to the pipe with one ``write()`` per frame: an in-memory copy into the
kernel, never a wait on a disk or a network. It never raises into the
application (``handleError`` is not even reached: failures are counted as
drops), and it takes no handler lock: frames are written atomically, so
threads of one process need not queue behind each other.
"""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import multiprocessing.util
from typing import Union

from forklog._worker import adoption, context, fallback
from forklog._worker.channel import Channel

__all__ = ["ForkHandler", "init_worker"]

#: How long a worker's exit waits to report drops it has not reported yet.
EXIT_FLUSH_TIMEOUT = 0.5


class ForkHandler(logging.handlers.QueueHandler):
    """Sends records to the hub. Installed as the only handler of a worker."""

    queue: Channel  # type: ignore[assignment]  # not a stdlib queue: no get()

    def __init__(self, queue: Channel) -> None:
        if not isinstance(queue, Channel):
            raise TypeError(
                f"forklog: expected the hub's queue (hub.queue), got {type(queue).__name__}; "
                "create a forklog.Hub in the parent and pass hub.queue to the children"
            )
        super().__init__(queue)  # type: ignore[arg-type]

    def handle(self, record: logging.LogRecord) -> bool:
        # No self.lock: a frame goes to the kernel in one atomic write().
        if not self.filters:
            self.emit(record)
            return True
        try:
            result = self.filter(record)
        except Exception:  # noqa: BLE001 - a filter that raises never reaches the log call
            self.queue._count_drop(getattr(record, "levelname", "UNKNOWN"))
            return False
        if result:
            if isinstance(result, logging.LogRecord):  # 3.12+: a filter may replace it
                record = result
            self.emit(record)
        return bool(result)

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record  # forklog._wire.records.encode reads the record; it never mutates it

    def emit(self, record: logging.LogRecord) -> None:
        try:
            context.apply(record)  # forklog.bind() fields, the active span's ids
            if not self.queue.send_record(record) and self.queue.hub_gone:
                # The hub has stopped: stderr, as if this process had no handler.
                last_resort = logging.lastResort
                if last_resort is not None and record.levelno >= last_resort.level:
                    last_resort.handle(record)
        except Exception:  # noqa: BLE001 - a log call never raises into the app
            self.queue._count_drop(getattr(record, "levelname", "UNKNOWN"))

    def flush(self) -> None:
        """Report pending drops (logging.shutdown calls this at a worker's exit)."""
        with contextlib.suppress(Exception):
            self.queue.flush(EXIT_FLUSH_TIMEOUT)

    def close(self) -> None:
        # The channel is shared with every other process: a handler closing
        # (dictConfig does that to every handler) must not close it.
        logging.Handler.close(self)


def init_worker(queue: Channel, *, level: Union[int, str, None] = None) -> ForkHandler:
    """Send this process's records to the hub: its handlers adopted, the hub's on root if it has none.

    Usable as ``Pool(initializer=forklog.init_worker, initargs=(hub.queue,))``
    or ``ProcessPoolExecutor(initializer=..., initargs=...)`` under the fork,
    spawn and forkserver start methods. The file and stream handlers the
    application configured (before, and from now on) write through the hub
    (:mod:`forklog._worker.adoption`). While it configures none, the hub's
    handler is root's and root's level the lowest level of the hub's sinks,
    so every record some sink wants leaves the worker
    (:mod:`forklog._worker.fallback`); ``level`` sets root's level instead.
    """
    handler = ForkHandler(queue)
    adoption.attach(queue)
    if level is not None:
        logging.getLogger().setLevel(level)
    fallback.install(handler, queue.level)
    # Pool children under fork and forkserver leave by os._exit(), so atexit
    # never runs there; multiprocessing's finalizers do.
    multiprocessing.util.Finalize(handler, queue.leave, args=(EXIT_FLUSH_TIMEOUT,), exitpriority=100)
    return handler
