"""Sinks that can block have their own buffer and thread (H14)."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import List

import pytest

import forklog
from forklog._master.buffered import BufferedSink, DeliveryError, Isolated, needs_isolation
from tests.support import Collect, wait_for


class Gate(logging.Handler):
    """A handler that blocks in emit() until the gate opens: a server that stopped answering."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.records: List[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.entered.set()
        self.gate.wait()
        self.records.append(record.getMessage())


class Flaky(BufferedSink):
    """Fails its first ``failures`` deliveries, the first after delivering part of the batch."""

    def __init__(self, failures: int, **kwargs: float) -> None:
        super().__init__(batch_size=10, **kwargs)  # type: ignore[arg-type]
        self.to_fail = failures
        self.got: List[str] = []
        self.disconnects = 0

    def deliver(self, records: List[logging.LogRecord]) -> None:
        if self.to_fail:
            self.to_fail -= 1
            self.got.extend(r.getMessage() for r in records[:3])
            raise DeliveryError("connection reset", delivered=3)
        self.got.extend(r.getMessage() for r in records)

    def disconnect(self) -> None:
        self.disconnects += 1


def log(hub: forklog.Hub, count: int, name: str = "iso") -> None:
    logger = logging.getLogger(name)
    logger.propagate = False
    logger.handlers[:] = [hub.handler()]
    logger.setLevel(logging.DEBUG)
    for k in range(count):
        logger.info("record %d", k)


def test_only_files_and_streams_stay_on_the_listener(tmp_path: Path) -> None:
    """Local files and streams are written by the listener; any other handler is isolated."""
    assert not needs_isolation(logging.FileHandler(tmp_path / "x.log", delay=True))
    assert not needs_isolation(logging.StreamHandler())
    assert not needs_isolation(Collect())  # says forklog_inline = True
    assert needs_isolation(logging.handlers.SocketHandler("127.0.0.1", 9))
    assert needs_isolation(Gate())
    hub = forklog.Hub([("gate", Gate()), ("file", logging.FileHandler(tmp_path / "y.log", delay=True))])
    kinds = {name: type(handler) for name, handler in hub.sinks}
    assert kinds == {"gate": Isolated, "file": logging.FileHandler}


def test_a_stalled_sink_does_not_hold_back_the_file(tmp_path: Path) -> None:
    """A sink that stopped answering: the file gets every record at once, the rest is counted."""
    path = tmp_path / "app.log"
    file_sink = forklog.RotatingFileSink(str(path))
    file_sink.setFormatter(logging.Formatter("%(message)s"))
    stalled = Gate()
    slow = Isolated(stalled, capacity=100)
    hub = forklog.Hub([("file", file_sink), ("slow", slow)]).start()
    started = time.monotonic()
    try:
        log(hub, 1000)
        wait_for(lambda: path.read_text().count("\n") >= 1000, 10, "the file to get every record")
        file_time = time.monotonic() - started
        stats = hub.stats()
        assert stats.written["slow"] == 1000  # accepted by the sink's buffer, or counted
        # A full buffer, plus the batch the sink's thread took (stuck in emit())
        # if it had run by then.
        kept = slow.pending
        assert 100 <= kept <= 200
        assert stats.dropped_by_sink == {"file": 0, "slow": 1000 - kept}
    finally:
        stalled.gate.set()  # a failure must not leave a sink stuck for the tests after it
    final = hub.stop(timeout=10)
    assert final is not None
    lines = path.read_text().splitlines()
    assert lines[:1000] == [f"record {k}" for k in range(1000)]
    reports = [line for line in lines[1000:] if line.startswith("forklog: sink slow could not write")]
    counted = sum(int(line.split()[6]) for line in reports)
    # Each record it lost is reported (and the reports it lost in turn).
    assert 1000 - kept <= counted == final.dropped_by_sink["slow"], lines[1000:]
    # What the slow sink did get: the records it kept, each once and in order
    # (the ones that found its buffer full are the ones counted), then the reports.
    got = [int(message.split()[1]) for message in stalled.records[:kept]]
    assert got == sorted(set(got)) and len(got) == kept
    assert all(message.startswith("forklog: ") for message in stalled.records[kept:])
    assert file_time < 5, "the file sink never waited for the stalled one"


def test_failed_batches_are_retried_without_duplicates() -> None:
    """A delivery that fails after sending part of a batch resumes after the part, in order."""
    sink = Flaky(failures=3, close_timeout=10.0)
    with forklog.Hub([("flaky", sink)]) as hub:
        log(hub, 100)
        wait_for(lambda: len(sink.got) >= 100, 10, "the retries to deliver everything")
    assert sink.got == [f"record {k}" for k in range(100)]
    assert sink.failures == 3 and sink.disconnects == 3 + 1, "one per failure, one at close"
    assert sink.dropped == 0


def test_close_is_bounded_and_counts_what_it_left(capfd: pytest.CaptureFixture[str]) -> None:
    """stop() does not wait past its budget on a sink that never returns; the rest is counted."""
    stalled = Gate()
    hub = forklog.Hub([("slow", Isolated(stalled, capacity=50))]).start()
    log(hub, 80)
    wait_for(lambda: hub.stats().written["slow"] == 80, 10, "the listener to hand over every record")
    started = time.monotonic()
    stats = hub.stop(timeout=1.0)
    assert time.monotonic() - started < 2.0
    stalled.gate.set()
    assert stats is not None
    # Buffered, refused, or stuck in emit(): everything it was handed is counted
    # (the 80 records, and any report of its own drops it was handed since).
    assert stats.dropped_by_sink["slow"] == stats.written["slow"] >= 80
    assert "abandoned" in capfd.readouterr().err


def test_drops_are_counted_by_level_and_process() -> None:
    """A full buffer drops the new record and counts it under its level and pid."""
    stalled = Gate()
    sink = Isolated(stalled, capacity=1)
    records = [logging.LogRecord("x", level, __file__, 0, "m", (), None) for level in (20, 30, 40, 40)]
    sink.handle(records[0])
    assert stalled.entered.wait(5), "the sink's thread took the first record"
    for record in records[1:]:
        sink.handle(record)
    assert sink.pending == 2, "one record in emit(), one buffered"
    assert dict(sink.drops) == {("ERROR", records[0].process): 2}
    stalled.gate.set()
    sink.close()
    assert stalled.records == ["m", "m"]


def test_a_sink_stuck_for_good_does_not_hang_the_exit(tmp_path: Path) -> None:
    """A handler that never returns from emit() holds its lock: exit leaves it alone, and says so."""
    script = tmp_path / "stuck.py"
    script.write_text(
        textwrap.dedent(
            """
            import logging, threading
            import forklog
            from forklog._master.buffered import Isolated

            class Stuck(logging.Handler):
                def emit(self, record):
                    threading.Event().wait()

            hub = forklog.Hub([("stuck", Isolated(Stuck(), close_timeout=0.2))]).start()
            log = logging.getLogger("app")
            log.addHandler(hub.handler())
            log.warning("one")
            log.warning("two")
            """
        )
    )
    command = [sys.executable, str(script)]
    done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "abandoned" in done.stderr
