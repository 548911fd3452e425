"""What the hub has seen: written by the master's threads, read by ``Hub.stats()``."""

from __future__ import annotations

import logging
from typing import Dict, Optional, Sequence

from forklog import _bounded
from forklog._master.ledger import Ledger
from forklog._stderr import Reporter
from forklog._wire.text import safe_str

__all__ = ["MAX_LEVEL_NAMES", "OTHER_LEVELS", "Counters"]

#: A drop report naming a level that ``dropped_by_level`` does not hold, while
#: it holds this many names, is counted under OTHER_LEVELS; the standard names
#: (``logging.getLevelNamesMapping()``) and OTHER_LEVELS are always taken, so
#: it holds at most this many names plus those (issue 21, item 11).
MAX_LEVEL_NAMES = 64
#: Where the drops of level names past the bound go (a worker's own report
#: adds up its drops past 64 names there too).
OTHER_LEVELS = "other"


class Counters:
    """What the hub has seen; written by the master's threads, read by ``stats()``."""

    def __init__(self, sink_names: Sequence[str], reporter: Optional[Reporter] = None) -> None:
        #: Says on stderr, at a bounded rate, what a bound refused.
        self.reporter = reporter if reporter is not None else Reporter()
        self.received = 0
        self.written: Dict[str, int] = {name: 0 for name in sink_names}
        self.sink_errors: Dict[str, int] = {name: 0 for name in sink_names}
        #: Records a sink raised on (a filter or emit() that raised), not written.
        self.sink_failed: Dict[str, int] = {name: 0 for name in sink_names}
        self.bad_records = 0
        #: Faults the listener survived outside any sink (a batch that raised).
        self.listener_faults = 0
        self.dropped_by_level: Dict[str, int] = {}
        self.dropped_by_process: Dict[int, int] = {}
        self.abandoned = 0
        self.ledger = Ledger(self.reporter)
        #: Level names a drop report named past MAX_LEVEL_NAMES: counted under OTHER_LEVELS.
        self.level_names_refused = 0
        self._standard = frozenset(logging.getLevelNamesMapping()) | {OTHER_LEVELS}
        self.settled = 0
        self.lag = 0.0
        #: Drops each sink had when the listener last reported them.
        self.sink_drops_reported: Dict[str, int] = {name: 0 for name in sink_names}
        #: Records that reached the hub and that no sink took (see unrouted_record).
        self.unrouted = 0
        self.unrouted_first: Optional[str] = None
        self.unrouted_reported = False

    def sink_dropped(self, name: str, sink: logging.Handler) -> int:
        """What ``sink`` accepted and did not write: its own count plus what raised."""
        own = getattr(sink, "dropped", 0)
        return self.sink_failed.get(name, 0) + (own if isinstance(own, int) else 0)

    def add_drops(self, pid: int, counts: Dict[str, int]) -> None:
        by_level = self.dropped_by_level
        for name, count in counts.items():
            level = name
            if level not in by_level and len(by_level) >= MAX_LEVEL_NAMES and level not in self._standard:
                self.level_names_refused += 1
                self.reporter.report(
                    "bound:levels",
                    f"drops of level {name[:48]!r} from pid {pid} are counted under "
                    f"{OTHER_LEVELS!r}: {len(by_level)} level names already (at most {MAX_LEVEL_NAMES}, "
                    f"the standard ones always taken); {self.level_names_refused} names so far",
                )
                level = OTHER_LEVELS
            by_level[level] = by_level.get(level, 0) + count
            _bounded.add(self.dropped_by_process, pid, count, _bounded.by_pid)

    def refused_by_bound(self) -> Dict[str, int]:
        """What the listener's bounds refused: "writer_accounts" (records not accounted), "level_names"."""
        refused = {"writer_accounts": self.ledger.refused, "level_names": self.level_names_refused}
        return {name: count for name, count in refused.items() if count}

    def record_received(self, pid: int, boot: int, seq: int) -> None:
        """A record arrived from writer (``pid``, ``boot``) with number ``seq``."""
        self.received += 1
        self.ledger.received(pid, boot, seq)

    def undecodable(self, reporter: Reporter, pid: int, exc: BaseException, what: str = "record") -> None:
        """A payload from ``pid`` that could not be read: skipped, counted, said at a bounded rate."""
        self.bad_records += 1
        reporter.report("decode", f"skipped an undecodable {what} from pid {pid}: {exc}")

    def unrouted_record(self, logger: object, levelname: object) -> None:
        """A record no sink took (every sink's level above it, their filters, or no sink)."""
        self.unrouted += 1
        if self.unrouted_first is None:
            self.unrouted_first = f"logger {safe_str(logger)!r} at {safe_str(levelname)}"

    def sink_failure(self, reporter: Reporter, name: str, what: str, exc: object, failed: int = 1) -> None:
        """A sink that raised: the error counted, ``failed`` records lost with it, said at a bounded rate.

        The one place a sink's error is handled: the hub's sinks and the
        adopted handlers' alike.
        """
        self.sink_errors[name] = self.sink_errors.get(name, 0) + 1
        if failed:
            self.sink_failed[name] = self.sink_failed.get(name, 0) + failed
        reporter.report(f"sink:{name}", f"sink {name} failed {what}: {exc!r}")
