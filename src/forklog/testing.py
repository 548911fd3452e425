"""Helpers for your own tests: run a hub in-process, assert on what crossed it.

::

    import forklog.testing

    def test_checkout_logs_the_order_id():
        with forklog.testing.capture() as logs:
            checkout(order_id=42)
        assert logs.messages(level="INFO") == ["order 42 paid"]
        assert logs.records[0].order_id == 42          # an extra, after the trip

The records are the ones the hub's sinks get: encoded by the worker side,
sent through the pipe, decoded by the listener. So a test sees what
production would write (the merged message, the traceback as text, extras
that could not travel as their ``repr()``), not the caller's ``LogRecord``.
Child processes can log into the same capture::

    with forklog.testing.capture() as logs:
        with multiprocessing.Pool(2, forklog.init_worker, (logs.queue,)) as pool:
            pool.map(job, range(10))
"""

from __future__ import annotations

import logging
import threading
import time
from types import TracebackType
from typing import Any, List, Optional, Type, Union

from forklog._master.hub import Hub, HubStats
from forklog._worker.channel import Channel

__all__ = ["Captured", "capture"]


class _Keep(logging.Handler):
    """The capture's sink: keeps every record, in the listener's order."""

    forklog_inline = True  # never blocks: the listener calls it directly

    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.records: List[logging.LogRecord] = []
        self.arrived = threading.Condition()

    def emit(self, record: logging.LogRecord) -> None:
        with self.arrived:
            self.records.append(record)
            self.arrived.notify_all()


class Captured:
    """What :func:`capture` yields: the records, and ways to ask about them."""

    def __init__(self, logger: logging.Logger, level: int, hub_options: Any) -> None:
        self._sink = _Keep()
        self.hub = Hub([("capture", self._sink)], **hub_options)
        self._logger = logger
        self._level = level
        self._saved_level = logger.level
        self._handler: Optional[logging.Handler] = None
        #: The final counters, once the block has ended.
        self.stats: Optional[HubStats] = None

    @property
    def queue(self) -> Channel:
        """The hub's queue, for ``forklog.init_worker`` in child processes."""
        return self.hub.queue

    @property
    def records(self) -> List[logging.LogRecord]:
        """Every record that crossed the hub so far (the hub's own ones included)."""
        return list(self._sink.records)

    def messages(self, level: Union[int, str, None] = None, logger: Optional[str] = None) -> List[str]:
        """The merged messages, optionally only at ``level`` and from ``logger`` (and its children)."""
        levelno = logging.getLevelName(level) if isinstance(level, str) else level
        return [
            record.getMessage()
            for record in self._sink.records
            if (levelno is None or record.levelno == levelno)
            and (logger is None or record.name == logger or record.name.startswith(logger + "."))
        ]

    def wait_for(self, count: int, timeout: float = 10.0) -> List[logging.LogRecord]:
        """Wait until ``count`` records have arrived (from children, say); fail after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._sink.arrived:
            while len(self._sink.records) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"forklog.testing: {len(self._sink.records)} records arrived, "
                        f"expected {count} within {timeout}s"
                    )
                self._sink.arrived.wait(left)
            return list(self._sink.records)

    def assert_logged(self, text: str, level: Union[int, str, None] = None) -> logging.LogRecord:
        """The first record whose message contains ``text`` (at ``level``); fail if none."""
        levelno = logging.getLevelName(level) if isinstance(level, str) else level
        for record in self._sink.records:
            if text in record.getMessage() and (levelno is None or record.levelno == levelno):
                return record
        seen = "\n  ".join(self.messages()) or "(no records)"
        raise AssertionError(f"forklog.testing: no record contains {text!r}; records:\n  {seen}")

    def __enter__(self) -> Captured:
        self.hub.start()
        self._handler = self.hub.handler()
        self._logger.addHandler(self._handler)
        self._logger.setLevel(self._level)
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None:
        if self._handler is not None:
            self._logger.removeHandler(self._handler)
        self._logger.setLevel(self._saved_level)
        self.stats = self.hub.stop()


def capture(
    logger: Union[logging.Logger, str, None] = None,
    level: Union[int, str] = logging.DEBUG,
    **hub_options: Any,
) -> Captured:
    """A hub in this process whose only sink keeps what crosses it.

    ``logger`` (the root logger by default) gets the hub's handler for the
    ``with`` block, at ``level``; its other handlers stay as they are.
    ``hub_options`` go to :class:`forklog.Hub` (``queue_size=10`` to test a
    full queue, say). At the end of the block the hub drains and stops, so
    every record logged inside is in :attr:`Captured.records`.
    """
    target = logger if isinstance(logger, logging.Logger) else logging.getLogger(logger)
    levelno = logging.getLevelName(level.upper()) if isinstance(level, str) else level
    if not isinstance(levelno, int):
        raise ValueError(f"forklog.testing.capture(): level={level!r}: expected a level name or number")
    return Captured(target, levelno, hub_options)
