"""The hub's lifecycle, ownership, robustness and accounting, in one process."""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from pathlib import Path
from typing import Dict, List

import pytest

import forklog
from forklog._master.buffered import BufferedSink
from tests.support import Collect, wait_for


def log_through(hub: forklog.Hub, count: int, name: str = "unit", level: int = logging.INFO) -> None:
    logger = logging.getLogger(name)
    logger.propagate = False
    handler = hub.handler()
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        for i in range(count):
            logger.log(level, "record %d", i)
    finally:
        logger.removeHandler(handler)


def test_start_twice_raises_and_stop_twice_is_harmless() -> None:
    """One owner, one start; a second stop() does nothing."""
    hub = forklog.Hub([Collect()]).start()
    with pytest.raises(RuntimeError, match="already running"):
        hub.start()
    assert hub.stop(timeout=2) is not None
    assert hub.stop(timeout=2) is None
    with pytest.raises(RuntimeError, match="already stopped"):
        hub.start()


def test_stop_in_another_process_does_nothing() -> None:
    """H17: a forked child calling stop() (an inherited atexit) leaves the owner's hub running."""
    collect = Collect()
    with forklog.Hub([collect]) as hub:
        pid = os.fork()
        if pid == 0:  # the child
            code = 0 if hub.stop(timeout=1) is None else 1
            log_through(hub, 1, "child")
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert hub.running
        # Each process has its own pipe: order holds within a process, so wait for the child's.
        wait_for(lambda: len(collect.records) == 1, 5, "the child's record")
        log_through(hub, 3, "parent")
    assert collect.messages() == ["record 0", "record 0", "record 1", "record 2"]
    assert [r.process for r in collect.records] == [pid, os.getpid(), os.getpid(), os.getpid()]


def test_stop_drains_everything_enqueued_before_it() -> None:
    """Records written before stop() all reach the sinks, in order."""
    collect = Collect()
    hub = forklog.Hub([collect]).start()
    log_through(hub, 5000)
    stats = hub.stop(timeout=10)
    assert collect.messages() == [f"record {i}" for i in range(5000)]
    assert stats is not None and stats.enqueued == 5000 and stats.written == {"collect": 5000}


def test_each_sink_applies_its_own_level() -> None:
    """respect_handler_level: a WARNING sink sees only WARNING and up."""
    everything, warnings = Collect(), Collect(logging.WARNING)
    with forklog.Hub([("all", everything), ("warn", warnings)]) as hub:
        log_through(hub, 2, level=logging.DEBUG)
        log_through(hub, 1, level=logging.WARNING)
    assert len(everything.records) == 3
    assert [r.levelname for r in warnings.records] == ["WARNING"]


class Exploding(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        raise OSError("disk on fire")


class BadFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        raise ValueError("filter bug")


def test_listener_survives_failing_sinks_and_reports_at_a_bounded_rate(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """H3: sink and filter exceptions are counted and reported a few times, not per record."""
    good, filtered = Collect(), Collect()
    filtered.addFilter(BadFilter())
    with forklog.Hub([("good", good), ("bad", Exploding()), ("filtered", filtered)]) as hub:
        log_through(hub, 200)
        stats = hub.stats()
    assert good.messages()[:200] == [f"record {k}" for k in range(200)]
    reports: Dict[str, int] = collections.Counter()
    for record in good.records[200:]:
        assert record.name == "forklog"
        report = record.__dict__["forklog_sink_dropped"]
        reports[report["sink"]] += report["count"]
    # Every record a failing sink lost is reported in the log (a report it
    # then failed on is counted too, and may be the one not yet reported).
    assert set(reports) == {"bad", "filtered"}
    for name, reported in reports.items():
        assert 200 <= reported <= hub.stats().dropped_by_sink[name] <= reported + 3
    err = capfd.readouterr().err
    assert "disk on fire" in err and "filter bug" in err
    assert err.count("forklog:") <= 4, err
    final = hub.stats()
    for name in ("bad", "filtered"):
        assert final.dropped_by_sink[name] >= final.sink_errors[name] >= 200
    assert final.dropped_by_sink["good"] == 0
    assert stats.listener_alive, "the listener died of a sink's exception"
    assert final.queue_depth == 0 and final.abandoned == 0, "stop() did not drain past the failing sinks"


def test_garbage_in_the_pipe_is_skipped() -> None:
    """Bytes written straight into the channel are counted; the hub goes on."""
    collect = Collect()
    with forklog.Hub([collect]) as hub:
        log_through(hub, 1)
        os.write(hub.queue.write_fd, b"\xf0\x1c not a frame at all" * 10)
        log_through(hub, 2)
    stats = hub.stats()
    assert collect.messages() == ["record 0", "record 0", "record 1"]
    assert stats.garbage_bytes > 0


def test_drops_are_summarised_in_the_log_and_the_stats() -> None:
    """H4: a worker's drops on a full queue arrive as one WARNING record and in stats()."""
    collect = Collect()
    hub = forklog.Hub([collect], pipe_size=4096)
    log_through(hub, 200)  # the hub is not reading yet: the pipe fills, the rest drop
    dropped = hub.queue.dropped["INFO"]
    assert 100 < dropped < 200
    hub.start()
    wait_for(lambda: hub.stats().pipe_bytes == 0, 10, "the hub to drain the pipe")
    log_through(hub, 1, "later")
    stats = hub.stop(timeout=5)
    summaries = [r for r in collect.records if r.name == "forklog"]
    assert len(summaries) == 1
    assert summaries[0].getMessage() == (
        f"forklog: dropped {dropped} records while the queue was full (INFO: {dropped})"
    )
    assert stats is not None
    assert stats.dropped_by_level == {"INFO": dropped}
    assert stats.dropped_by_process == {os.getpid(): dropped}
    assert len(collect.records) == 200 - dropped + 2


class Stalled(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.gate.wait(30)


@pytest.mark.parametrize("inline", [True, False], ids=["file-like", "isolated"])
def test_stop_is_bounded_with_a_stalled_sink(capfd: pytest.CaptureFixture[str], inline: bool) -> None:
    """H8: stop(timeout) returns in time even when a sink never returns, and says what it left."""
    stalled = Stalled()
    stalled.forklog_inline = inline  # type: ignore[attr-defined]  # on the listener, or its own thread
    hub = forklog.Hub([stalled]).start()
    log_through(hub, 50)
    started = time.monotonic()
    hub.stop(timeout=1.0)
    assert time.monotonic() - started < 1.5
    stalled.gate.set()
    assert "abandoned" in capfd.readouterr().err


def test_undecodable_record_is_counted_and_skipped() -> None:
    """A well-framed record whose payload is not a record cannot stop the listener."""
    from forklog._wire import framing as _frame

    collect = Collect()
    with forklog.Hub([collect]) as hub:
        for frame in _frame.frames(0, os.getpid(), 1, 999, b"\x00not marshal data"):
            os.write(hub.queue.write_fd, frame)
        log_through(hub, 1)
    assert collect.messages() == ["record 0"]
    assert hub.stats().bad_records == 1


def test_records_up_to_the_limit_arrive_whole_and_larger_ones_truncated() -> None:
    """Nearly max_record_bytes crosses whole; a larger record is cut, with a marker, in one record."""
    collect = Collect()
    with forklog.Hub([collect], max_record_bytes=1 << 20) as hub:
        logger = logging.getLogger("sizes")
        logger.propagate = False
        logger.addHandler(hub.handler())
        logger.error("a%s", "x" * ((1 << 20) - 4096))
        logger.error("b%s", "y" * (3 << 20))
    first, second = collect.messages()
    assert first == "a" + "x" * ((1 << 20) - 4096)
    assert second.startswith("byyy") and second.endswith("characters]") and "[forklog: truncated" in second
    assert len(second.encode()) < 1 << 20


def test_stop_is_bounded_with_a_record_cut_short_in_the_pipe(capfd: pytest.CaptureFixture[str]) -> None:
    """A writer killed between the fragments of a large record cannot hold stop() up; it is reported."""
    from forklog import _wire as wire
    from forklog._wire import framing as _frame

    collect = Collect()
    hub = forklog.Hub([collect]).start()
    frames = _frame.frames(0, 999_999, 7, 0, wire.encode(logging.makeLogRecord({"msg": "z" * 20_000})))
    os.write(hub.queue.write_fd, frames[0])  # the rest never comes
    log_through(hub, 3)
    started = time.monotonic()
    stats = hub.stop(timeout=2)
    assert time.monotonic() - started < 2.5
    assert collect.messages() == ["record 0", "record 1", "record 2"]
    assert stats is not None
    assert "1 incomplete large records" in capfd.readouterr().err


class Gathered(BufferedSink):
    """A network-like sink: its own thread delivers from its buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.got: List[str] = []

    def deliver(self, records: List[logging.LogRecord]) -> None:
        self.got.extend(r.getMessage() for r in records)


def test_the_hubs_threads_wait_their_turn_when_they_wake(tmp_path: Path) -> None:
    """Receiver, listener, a network sink's thread and gzip run SCHED_BATCH; the app's threads keep theirs.

    A thread that wakes under the default policy takes a CPU at once, from a
    worker in the middle of a log call when the workers keep every CPU busy.
    """
    policy = os.sched_getscheduler(0)
    assert policy == os.SCHED_OTHER
    sink = forklog.RotatingFileSink(tmp_path / "app.log", maxBytes=50, backupCount=2, compress=True)
    network = Gathered()
    with forklog.Hub([sink, network]) as hub:
        log_through(hub, 20)
        wait_for(lambda: len(network.got) == 20, 10, "the network sink's records")
        wait_for(lambda: any(tmp_path.glob("app.log.*.gz")), 10, "a compressed backup")
        names = {"forklog-receiver", "forklog-listener", "forklog-sink-Gathered", "forklog-gzip"}
        ours = {t.name: t for t in threading.enumerate() if t.name.startswith("forklog-")}
        assert names <= set(ours), sorted(ours)
        for name, thread in ours.items():
            assert thread.native_id is not None
            assert os.sched_getscheduler(thread.native_id) == os.SCHED_BATCH, name
    assert os.sched_getscheduler(0) == policy, "the thread that started the hub is left alone"
