"""What the hub has seen: written by the master's threads, read by ``Hub.stats()``."""

from __future__ import annotations

import logging
from typing import Dict, Optional, Sequence

from forklog import _bounded
from forklog._master.ledger import Ledger
from forklog._master.report import Reporter

__all__ = ["Counters"]


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

    def sink_failure(
        self, reporter: Reporter, name: str, what: str, exc: BaseException, failed: int = 1
    ) -> None:
        """A sink that raised: the error counted, ``failed`` records lost with it, said at a bounded rate."""
        self.sink_errors[name] += 1
        self.sink_failed[name] += failed
        reporter.report(f"sink:{name}", f"sink {name} failed {what}: {exc!r}")
