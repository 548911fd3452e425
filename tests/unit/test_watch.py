"""Watching the hub: the stats record and the Prometheus text file."""

from __future__ import annotations

import itertools
import logging
import re
import time
from pathlib import Path
from typing import List

import pytest

import forklog
from tests.support import Collect, wait_for

# One sample line of the text exposition format: name, optional labels, a number.
SAMPLE = re.compile(r'^[a-z_]+(\{[a-z]+="[^"\\]*"(,[a-z]+="[^"\\]*")*\})? -?[0-9.e+-]+$')


def log(hub: forklog.Hub, count: int) -> None:
    logger = logging.Logger("watched", logging.DEBUG)
    logger.addHandler(hub.handler())
    for k in range(count):
        logger.info("record %d", k)


def test_a_stats_record_comes_at_the_interval() -> None:
    """With stats_interval set, the log gets 'forklog: stats' records with the snapshot, that far apart."""
    interval = 1.0
    collect = Collect()

    def stats_records() -> List[logging.LogRecord]:
        return [
            r for r in collect.records if r.name == "forklog" and r.getMessage().startswith("forklog: stats")
        ]

    started = time.time()  # the clock of LogRecord.created
    with forklog.Hub([("collect", collect)], stats_interval=interval) as hub:
        log(hub, 30)
        wait_for(lambda: len(stats_records()) >= 3, 10 * interval, "three stats records")
    stats = stats_records()
    # Each comes once the interval has passed, at the listener's next look (it looks at least
    # every 0.25 s): never sooner, and sooner than twice the interval.
    times = [started] + [r.created for r in stats[:3]]
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert all(0.9 * interval <= gap < 1.9 * interval for gap in gaps), gaps
    last = stats[-1].__dict__["forklog_stats"]
    assert last["written"]["collect"] >= 30 and last["listener_alive"] is True
    assert last["enqueued"] >= 30 and stats[-1].getMessage().startswith(
        f"forklog: stats: {last['enqueued']} records in"
    )


def test_no_stats_record_by_default() -> None:
    """The stats record is off unless asked for."""
    collect = Collect()
    with forklog.Hub([collect]) as hub:
        log(hub, 5)
    assert [r.getMessage() for r in collect.records] == [f"record {k}" for k in range(5)]


def test_prometheus_file(tmp_path: Path) -> None:
    """The master keeps a Prometheus text file current, and writes it once more at stop()."""
    path = tmp_path / "forklog.prom"
    collect = Collect()
    hub = forklog.Hub([("collect", collect)], prometheus_file=str(path), stats_interval=0.2).start()
    log(hub, 40)
    wait_for(
        lambda: path.exists() and 'forklog_records_written_total{sink="collect"} 4' in path.read_text(),
        10,
        "the file to count the records",
    )
    hub.stop()
    text = path.read_text()
    for line in text.splitlines():
        assert line.startswith("# HELP ") or line.startswith("# TYPE ") or SAMPLE.match(line), line
    values = dict(line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#"))
    assert int(values['forklog_records_written_total{sink="collect"}']) == len(collect.records)
    assert values["forklog_listener_up"] == "0"  # the final snapshot, after stop
    assert int(values["forklog_records_received_total"]) >= 40
    assert not list(tmp_path.glob("*.tmp")), "written beside, then renamed"


def test_bad_interval_fails_at_once() -> None:
    """A negative stats_interval is refused when the hub is built."""
    with pytest.raises(ValueError, match="stats_interval=-1"):
        forklog.Hub([], stats_interval=-1)
