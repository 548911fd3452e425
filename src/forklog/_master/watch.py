"""Watching the hub: a periodic stats record and a Prometheus text file.

Both are written by the listener thread between two batches, from the
same snapshot ``Hub.stats()`` returns:

* every ``stats_interval`` seconds (off by default) an INFO record from the
  ``forklog`` logger, ``forklog: stats: ...``, with the whole snapshot as
  the extra field ``forklog_stats`` (an object in the JSON file);
* when ``prometheus_file`` is set, that file in the Prometheus text format
  (for node_exporter's textfile collector), replaced atomically (written
  beside it under a random name, created exclusively, then renamed) every
  ``stats_interval`` seconds, or every 10 seconds when the stats record is
  off, and once more at ``stop()``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
from typing import Callable, Dict, Iterable, List, Optional, Tuple

from forklog._master.log_directory import LogDirectory
from forklog._master.report import own_record
from forklog._master.rotation import create_in
from forklog._master.stats import HubStats
from forklog._stderr import Reporter

__all__ = ["StatsWatch", "prometheus_text"]

#: How often the Prometheus file is refreshed when the stats record is off.
PROMETHEUS_DEFAULT_INTERVAL = 10.0


class StatsWatch:
    """Decides when to write the stats record and the Prometheus file."""

    def __init__(
        self,
        stats: Callable[[], HubStats],
        write: Callable[[logging.LogRecord], None],
        reporter: Reporter,
        *,
        interval: float = 0.0,
        prometheus_file: Optional[str] = None,
    ) -> None:
        self._stats = stats
        self._write = write
        self._reporter = reporter
        self.interval = interval
        self.prometheus_file = prometheus_file
        #: The Prometheus file's directory, held from the start (before any worker
        #: runs): the file is written and renamed relative to it, never by path.
        self._directory = (
            LogDirectory(os.path.dirname(prometheus_file), 0o640, create=False) if prometheus_file else None
        )
        self._file_interval = interval if interval > 0 else PROMETHEUS_DEFAULT_INTERVAL
        now = time.monotonic()
        self._next_record = now + interval if interval > 0 else float("inf")
        self._next_file = now if prometheus_file else float("inf")

    @property
    def active(self) -> bool:
        return self.interval > 0 or self.prometheus_file is not None

    def tick(self, now: float) -> bool:
        """The stats record and the Prometheus file, when due: True if a record was written."""
        if now < self._next_record and now < self._next_file:
            return False
        stats = self._stats()
        wrote = now >= self._next_record
        if wrote:
            self._next_record = now + self.interval
            self._write(stats_record(stats))
        if now >= self._next_file:
            self._next_file = now + self._file_interval
            self.write_prometheus(stats)
        return wrote

    def write_prometheus(self, stats: HubStats) -> None:
        path, directory = self.prometheus_file, self._directory
        if path is None or directory is None:
            return
        data = prometheus_text(stats).encode("utf-8")
        name = os.path.basename(path)
        temporary: Optional[str] = None
        placed = False
        try:
            # Beside the file, a random name, O_EXCL | O_NOFOLLOW: the directory may be
            # /tmp or another user's. 0o666 under the umask: the mode open(..., "w") gives.
            fd, temporary = create_in(directory, name, "prom", 0o666)
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            directory.replace(temporary, name)
            placed = True
        except OSError as exc:
            self._reporter.report("prometheus", f"could not write {path}: {exc!r}")
        finally:
            if not placed and temporary is not None:
                with contextlib.suppress(OSError):
                    directory.unlink(temporary)

    def release_in_child(self) -> None:
        """In a forked child: the directory's descriptor is the master's."""
        if self._directory is not None:
            self._directory.release_in_child()


def stats_record(stats: HubStats) -> logging.LogRecord:
    written = ", ".join(f"{name} {count}" for name, count in sorted(stats.written.items()))
    return own_record(
        "forklog: stats: %d records in, written (%s), %d dropped by workers, %d lost, "
        "%d dropped by sinks, queue %d, lag %.3fs",
        (
            stats.enqueued,
            written,
            stats.dropped,
            stats.lost,
            sum(stats.dropped_by_sink.values()),
            stats.queue_depth,
            stats.listener_lag,
        ),
        logging.INFO,
        forklog_stats=_plain(stats),
    )


def _plain(stats: HubStats) -> Dict[str, object]:
    """The snapshot as JSON-ready data (string keys)."""
    out: Dict[str, object] = {}
    for field in dataclasses.fields(stats):
        value = getattr(stats, field.name)
        out[field.name] = {str(k): v for k, v in value.items()} if isinstance(value, dict) else value
    return out


Sample = Tuple[Dict[str, str], float]


def prometheus_text(stats: HubStats) -> str:
    """``stats`` in the Prometheus text exposition format (version 0.0.4)."""
    metrics: List[Tuple[str, str, str, Iterable[Sample]]] = [
        ("forklog_records_received_total", "counter", "Records the hub took from the queue.",
         [({}, stats.enqueued)]),
        ("forklog_records_written_total", "counter", "Records each sink accepted.",
         [({"sink": k}, v) for k, v in sorted(stats.written.items())]),
        ("forklog_records_dropped_total", "counter", "Records dropped by their processes on a full queue.",
         [({"level": k}, v) for k, v in sorted(stats.dropped_by_level.items())]),
        ("forklog_records_lost_total", "counter", "Records sent by processes that died and never arrived.",
         [({}, stats.lost)]),
        ("forklog_sink_dropped_total", "counter", "Records a sink accepted and could not write.",
         [({"sink": k}, v) for k, v in sorted(stats.dropped_by_sink.items())]),
        ("forklog_sink_resent_total", "counter", "Records a sink sent again after a broken connection.",
         [({"sink": k}, v) for k, v in sorted(stats.resent_by_sink.items())]),
        ("forklog_sink_errors_total", "counter", "Errors raised by each sink.",
         [({"sink": k}, v) for k, v in sorted(stats.sink_errors.items())]),
        ("forklog_records_unrouted_total", "counter", "Records that reached the hub and that no sink took.",
         [({}, stats.unrouted)]),
        ("forklog_bad_records_total", "counter", "Records that arrived and could not be decoded.",
         [({}, stats.bad_records)]),
        ("forklog_listener_faults_total", "counter", "Faults the listener survived outside any sink.",
         [({}, stats.listener_faults)]),
        ("forklog_refused_by_bound_total", "counter", "What a bound on the master's tables refused.",
         [({"table": k}, v) for k, v in sorted(stats.refused_by_bound.items())]),
        ("forklog_foreign_bytes_total", "counter", "Bytes of frames of another wire version, skipped.",
         [({}, stats.foreign_bytes)]),
        ("forklog_garbage_bytes_total", "counter", "Bytes in the queue that were not forklog frames.",
         [({}, stats.garbage_bytes)]),
        ("forklog_queue_depth", "gauge", "Records waiting between the pipe and the sinks.",
         [({}, stats.queue_depth)]),
        ("forklog_pipe_bytes", "gauge", "Bytes waiting in the pipe.", [({}, stats.pipe_bytes)]),
        ("forklog_sink_pending", "gauge", "Records waiting in the buffer of a sink with its own thread.",
         [({"sink": k}, v) for k, v in sorted(stats.sink_pending.items())]),
        ("forklog_listener_lag_seconds", "gauge", "Age of the last record written when it was written.",
         [({}, stats.listener_lag)]),
        ("forklog_listener_up", "gauge", "1 while the listener thread runs.",
         [({}, 1 if stats.listener_alive else 0)]),
    ]  # fmt: skip
    lines: List[str] = []
    for name, kind, help_text, samples in metrics:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            rendered = ",".join(f'{key}="{_escape(val)}"' for key, val in labels.items())
            number = str(value) if isinstance(value, int) else repr(float(value))
            lines.append(f"{name}{{{rendered}}} {number}" if rendered else f"{name} {number}")
    return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
