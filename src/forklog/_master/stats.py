"""``HubStats``: a snapshot of the hub's counters, read by ``Hub.stats()``, the watch and the tests."""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING, Dict, List, Optional, Tuple

from forklog._master.buffered import BufferedSink
from forklog._wire import framing

if TYPE_CHECKING:
    from forklog._master.backlog import Backlog
    from forklog._master.counters import Counters
    from forklog._master.listener import Listener
    from forklog._master.receiver import Receiver
    from forklog._master.targets import Targets
    from forklog._worker.channel import Channel

__all__ = ["HubStats"]


@dataclasses.dataclass(frozen=True)
class HubStats:
    """A snapshot of the hub's counters (``Hub.stats()``)."""

    #: Records taken out of the queue by the listener.
    enqueued: int
    #: Records each sink accepted (passed its level and filters), by sink name.
    written: Dict[str, int]
    #: Records the emitting processes dropped on a full queue, by level name.
    dropped_by_level: Dict[str, int]
    #: The same drops, by emitting pid.
    dropped_by_process: Dict[int, int]
    #: Errors raised by each sink (reported on stderr at a bounded rate).
    sink_errors: Dict[str, int]
    #: Records a sink accepted but could not write (its buffer was full, its
    #: disk or server failing), by sink name; reported in the log as well.
    dropped_by_sink: Dict[str, int]
    #: Records waiting in the buffers of the sinks that have their own thread.
    sink_pending: Dict[str, int]
    #: Records that arrived but could not be decoded.
    bad_records: int
    #: Large records whose writer stopped before its last fragment, by pid: killed
    #: mid-record (then in ``lost_by_process`` too), or out of patience with a full
    #: pipe (then its drop, in ``dropped_by_process`` too).
    incomplete_by_process: Dict[int, int]
    #: Bytes in the queue that were not forklog frames, skipped.
    garbage_bytes: int
    #: Records waiting between the pipe and the sinks.
    queue_depth: int
    #: Bytes waiting in the pipe itself.
    pipe_bytes: int
    #: Records left behind by ``stop()`` when its timeout ran out.
    abandoned: int
    #: Records a writer sent (or dropped without reporting) that never
    #: arrived, by pid: settled when the writer is gone, reported in the log.
    lost_by_process: Dict[int, int]
    #: Writers that are gone and whose accounts are settled.
    settled_processes: int
    #: Whether the listener thread is running (it survives sink and record faults).
    listener_alive: bool
    #: Seconds between the creation of the last record written and its writing.
    listener_lag: float
    #: Records that reached the hub and that no sink took (every sink's level
    #: above theirs, their filters, or no sink at all); reported once in the log.
    unrouted: int = 0
    #: Records logged on the hub's own threads (a sink whose emit logs): kept
    #: out of the hub, said on stderr at a bounded rate (H26).
    feedback: int = 0
    #: Records a sink sent again after a broken connection (RELP: each may
    #: have arrived twice), by sink name; sinks that never resend are absent.
    resent_by_sink: Dict[str, int] = dataclasses.field(default_factory=dict)
    #: Faults the listener survived outside any sink: a batch, or its periodic work,
    #: that raised (a bug, or bytes from a worker no check foresaw); each said on stderr.
    listener_faults: int = 0
    #: Frames of another wire version (a writer running another forklog), skipped
    #: whole, by the pid they name; each pid said once on stderr ("pid P speaks wire
    #: vN, this hub vM").
    foreign_by_process: Dict[int, int] = dataclasses.field(default_factory=dict)
    #: The bytes of those frames.
    foreign_bytes: int = 0
    #: What the master's bounds on its per-writer state refused (issue 21, item 11),
    #: by bound, each said on stderr at a bounded rate: "writer_accounts" (records
    #: written but not accounted: the ledger held its most accounts, or a pid its
    #: most boots), "level_names" (level names of drop reports counted under
    #: "other"), "partial_records" (large records abandoned to keep the records
    #: being put together within their count or bytes) and "max_record_bytes"
    #: (large records abandoned past the hub's ``max_record_bytes``); the last two
    #: are in ``incomplete_by_process`` too.
    refused_by_bound: Dict[str, int] = dataclasses.field(default_factory=dict)

    @property
    def dropped(self) -> int:
        return sum(self.dropped_by_level.values())

    @property
    def lost(self) -> int:
        return sum(self.lost_by_process.values())


def snapshot(
    counters: Counters,
    *,
    receiver: Optional[Receiver],
    backlog: Backlog,
    listener: Optional[Listener],
    sinks: List[Tuple[str, logging.Handler]],
    targets: Targets,
    channel: Channel,
) -> HubStats:
    """The hub's counters now (``Hub.stats()``)."""
    frames = receiver.frames if receiver is not None else None
    read_fd = channel.read_fd
    return HubStats(
        enqueued=counters.received,
        written=dict(counters.written),
        dropped_by_level=dict(counters.dropped_by_level),
        dropped_by_process=dict(counters.dropped_by_process),
        sink_errors=dict(counters.sink_errors),
        dropped_by_sink={
            **{name: counters.sink_dropped(name, handler) for name, handler in sinks},
            **targets.dropped(),
        },
        sink_pending={name: handler.pending for name, handler in sinks if isinstance(handler, BufferedSink)},
        bad_records=counters.bad_records,
        incomplete_by_process=dict(frames.abandoned_records) if frames else {},
        garbage_bytes=frames.garbage_bytes if frames else 0,
        queue_depth=backlog.depth(),
        pipe_bytes=receiver.sources.backlog()
        if receiver is not None
        else framing.pipe_backlog(read_fd)
        if read_fd is not None
        else 0,
        abandoned=counters.abandoned,
        lost_by_process=dict(counters.ledger.lost_by_process),
        settled_processes=counters.settled,
        listener_alive=listener is not None and listener.is_alive(),
        listener_lag=counters.lag,
        unrouted=counters.unrouted,
        feedback=channel.feedback,
        listener_faults=counters.listener_faults,
        foreign_by_process=dict(frames.foreign_by_process) if frames else {},
        foreign_bytes=frames.foreign_bytes if frames else 0,
        refused_by_bound={
            **counters.refused_by_bound(),
            **(dict(frames.refused) if frames else {}),
            **({"writers": receiver.sources.refused} if receiver and receiver.sources.refused else {}),
        },
        resent_by_sink={
            name: int(getattr(handler, "resent", 0))
            for name, handler in sinks
            if isinstance(getattr(handler, "resent", None), int)
        },
    )
