"""What an application or a sink does cannot stop, flood or fool the hub (issue 13's findings)."""

from __future__ import annotations

import gc
import logging
import os
import time
import types
import weakref
from pathlib import Path
from typing import Iterator, Tuple

import pytest

import forklog
from forklog._master import hub as hub_module
from tests.support import Collect, Stall, in_child, wait_for


@pytest.fixture
def log() -> Iterator[logging.Logger]:
    """A logger of the test's own, cleaned up after it."""
    logger = logging.getLogger("hostile.test")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    yield logger
    for handler in list(logger.handlers):
        logger.removeHandler(handler)


class ChattySink(Collect):
    """A sink whose emit logs a WARNING, as urllib3 does on a retry inside an HTTP handler."""

    def emit(self, record: logging.LogRecord) -> None:
        super().emit(record)
        logging.getLogger("hostile.test").warning("retrying after %s", record.getMessage())


def test_a_sink_that_logs_does_not_feed_itself(
    log: logging.Logger, capfd: pytest.CaptureFixture[str]
) -> None:
    """A record logged inside a sink's emit stays out of the hub: one app record is one record written."""
    sink = ChattySink()
    with forklog.Hub([sink]) as hub:
        log.addHandler(hub.handler())  # the pool pattern: the parent logs through the hub too
        log.info("one application record")
        wait_for(lambda: hub.stats().feedback >= 1, 10, "the sink's own record to be kept out")
        stats = hub.stop()
    assert stats is not None and stats.feedback == 1
    assert sink.messages() == ["one application record"]
    assert "kept out of the hub: WARNING hostile.test: retrying after one application record" in (
        capfd.readouterr().err
    )


def test_a_lone_surrogate_reaches_a_plain_file_handler(tmp_path: Path, log: logging.Logger) -> None:
    """Text with lone surrogates is written with them escaped, to a stdlib FileHandler sink."""
    path = tmp_path / "plain.log"
    with forklog.Hub([logging.FileHandler(path, encoding="utf-8")]) as hub:
        log.addHandler(hub.handler())
        log.info("x \udc80 y")
        stats = hub.stop()
    assert stats is not None and stats.sink_errors == {"filehandler": 0}
    assert path.read_text(encoding="utf-8") == "x \\udc80 y\n"


@pytest.mark.parametrize("forged", [{"INFO": "many"}, {"INFO": 10**6}, "not a dict", {"INFO": -5}])
def test_an_application_record_cannot_forge_the_drop_accounting(log: logging.Logger, forged: object) -> None:
    """A record on the forklog logger with forklog_dropped is data: the listener lives, no drop is counted."""
    sink = Collect()
    forklog_logger = logging.getLogger("forklog")
    with forklog.Hub([sink]) as hub:
        handler = hub.handler()
        forklog_logger.addHandler(handler)
        try:
            forklog_logger.warning("forged", extra={"forklog_dropped": forged})
            log.addHandler(hub.handler())
            log.info("after")
            wait_for(lambda: "after" in sink.messages(), 10, "the record after the forged one")
        finally:
            forklog_logger.removeHandler(handler)
        stats = hub.stop()
    assert stats is not None and stats.listener_alive is False  # stopped by stop(), not before
    assert stats.dropped == 0 and stats.dropped_by_process == {}
    assert sink.messages() == ["forged", "after"]


def test_a_stopped_hub_is_not_kept_alive_by_atexit() -> None:
    """stop() unregisters the owner's atexit hook: a stopped hub, and its sinks' records, can be freed."""
    hub = forklog.Hub([Collect()]).start()
    assert hub in hub_module._live_hubs
    hub.stop()
    assert hub not in hub_module._live_hubs, "the fork hooks still see a stopped hub"
    gc.collect()
    # atexit keeps a registered hook, the hub's bound method, alive until it is unregistered.
    hooks = [
        r
        for r in gc.get_referrers(hub)
        if isinstance(r, types.MethodType) and r.__func__ is forklog.Hub._stop_at_exit
    ]
    assert hooks == [], "stop() left the hub's atexit hook registered"
    ref = weakref.ref(hub)
    del hub
    gc.collect()
    assert ref() is None, "a stopped hub is still referenced"


def test_a_raising_filter_on_the_workers_handler_never_reaches_the_log_call(log: logging.Logger) -> None:
    """A filter of the queue handler that raises: the log call returns, the record is counted as dropped."""

    def bad_filter(record: logging.LogRecord) -> bool:
        raise RuntimeError("filter bug")

    with forklog.Hub([Collect()]) as hub:
        handler = hub.handler()
        handler.addFilter(bad_filter)
        log.addHandler(handler)
        log.info("filtered badly")  # must not raise
        assert hub.queue.dropped == {"INFO": 1}
        hub.stop()


def test_a_channel_rebuilt_in_a_child_and_dropped_closes_its_descriptors() -> None:
    """Unpickling the channel (as a spawn child does) and dropping it leaves no descriptor open."""
    import pickle

    with forklog.Hub([Collect()]) as hub:
        pickle.loads(pickle.dumps(hub.queue))  # the first starts multiprocessing's fd-passing helper
        gc.collect()
        before = len(os.listdir("/proc/self/fd"))
        for _ in range(20):
            copy = pickle.loads(pickle.dumps(hub.queue))
            del copy
        gc.collect()
        # Each copy registered a pipe of its own with the hub (this process): the hub
        # closes its ends when the copy's write end is gone.
        # (<=: the first copy's pipe may end, and the hub close its ends, after ``before`` was taken.)
        wait_for(lambda: len(os.listdir("/proc/self/fd")) <= before, 5, "every copy's descriptors closed")
        hub.stop()


def test_a_missing_log_directory_is_made(tmp_path: Path, log: logging.Logger) -> None:
    """A file sink whose directory does not exist yet makes it, as gunicorn does for its own files."""
    path = tmp_path / "new" / "deeper" / "app.log"
    with forklog.Hub([forklog.RotatingFileSink(path)]) as hub:
        log.addHandler(hub.handler())
        log.info("into a new directory")
        stats = hub.stop()
    assert stats is not None and stats.dropped_by_sink == {"rotatingfilesink": 0}
    assert path.read_text() == "into a new directory\n"


def test_a_rotation_lock_held_elsewhere_never_blocks_the_listener(
    tmp_path: Path, log: logging.Logger
) -> None:
    """Another process holding the rotation's flock for good: records are still written, stop is prompt."""
    import fcntl

    path = tmp_path / "held.log"
    holder = os.open(f"{path}.lock", os.O_RDONLY | os.O_CREAT, 0o640)
    fcntl.flock(holder, fcntl.LOCK_EX)  # a stopped old master under USR2
    try:
        with forklog.Hub([forklog.RotatingFileSink(path, maxBytes=200, backupCount=2)]) as hub:
            log.addHandler(hub.handler())
            for i in range(30):
                log.info("record %02d %s", i, "r" * 40)
            started = time.monotonic()
            stats = hub.stop(timeout=10)
            assert time.monotonic() - started < 5
    finally:
        os.close(holder)
    assert stats is not None and stats.written == {"rotatingfilesink": 30}
    assert stats.sink_errors["rotatingfilesink"] >= 1, "the failed rotation is reported"
    lines = path.read_text().splitlines()
    assert [line.split()[1] for line in lines] == [f"{i:02d}" for i in range(30)]


def timed_fork() -> Tuple[float, float]:
    """Fork a child that exits at once; when the fork began and when it returned in the parent."""
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    returned = time.monotonic()
    os.waitpid(pid, 0)
    return started, returned


def test_a_stalled_sink_never_holds_back_a_fork_or_a_reopen(
    log: logging.Logger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Listener stuck in a sink: reopen() (USR1) returns at once, fork() once the bound has passed."""
    # A bound long enough to tell a fork that waits for it from one that does not; the sink is
    # stuck for far longer: a fork or a reopen that waited on it would take `stuck` seconds.
    bound, stuck = 1.0, 30.0
    monkeypatch.setattr(hub_module, "FORK_QUIESCE_TIMEOUT", bound)
    stall = Stall(timeout=stuck)
    with forklog.Hub([stall]) as hub:
        log.addHandler(hub.handler())
        try:
            log.info("the listener takes this and stalls")
            wait_for(stall.entered.is_set, 10, "the listener inside the sink")
            since = hub._dispatch_lock.held_since
            assert since is not None, "the listener holds the dispatch lock while in the sink"
            started = time.monotonic()
            hub.reopen()
            reopened = time.monotonic() - started
            # The first fork waits for the batch until the bound; the batch has then run past it
            # and the later forks do not wait at all.
            forks = [timed_fork() for _ in range(3)]
            assert hub._dispatch_lock.held_since == since, f"a call waited the sink's {stuck:g} s out"
        finally:
            stall.go.set()
        hub.stop()
    assert reopened < bound / 2, f"reopen() took {reopened:.3f} s with the listener stuck in a sink"
    (_first_began, first_returned), *later = forks
    waited = first_returned - since
    assert bound * 0.9 <= waited < bound * 1.5, f"the first fork returned {waited:.3f} s into the batch"
    took = [returned - began for began, returned in later]
    assert max(took) < bound / 2, f"forks took {took} s on a sink stuck for longer than the bound"


def test_a_raising_filter_fails_its_record_not_the_syslog_batch(log: logging.Logger) -> None:
    """A SyslogSink filter that raises for one record: the others delivered, that one counted, no retry."""
    import socket
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    received = bytearray()

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            while chunk := conn.recv(65536):
                received.extend(chunk)

    reader = threading.Thread(target=serve, daemon=True)
    reader.start()

    def picky(record: logging.LogRecord) -> bool:
        if "bad" in record.getMessage():
            raise ValueError("filter bug")
        return True

    sink = forklog.SyslogSink(("127.0.0.1", server.getsockname()[1]))
    sink.addFilter(picky)
    with forklog.Hub([("syslog", sink)]) as hub:
        log.addHandler(hub.handler())
        for message in ("good one", "bad two", "good three"):
            log.info(message)
        wait_for(lambda: received.count(b"good") == 2, 10, "the good records")
        stats = hub.stop()
    server.close()
    assert stats is not None and stats.dropped_by_sink["syslog"] == 1 and stats.sink_pending["syslog"] == 0
    assert b"bad two" not in received and sink.failures == 1


def test_per_process_counters_stay_bounded_and_keep_their_totals() -> None:
    """Thousands of recycled workers: the per-pid counts fold the oldest into pid 0, the totals exact."""
    from forklog import _bounded
    from forklog._master.counters import Counters
    from forklog._master.ledger import Ledger

    counters = Counters([])
    ledger = Ledger()
    for pid in range(1, 5001):
        counters.add_drops(pid, {"INFO": 2})
        ledger.received(pid, 1, 0)
        ledger.dropped(pid, 1, 0)
        ledger.close(pid, {1: 4})  # 4 numbered, 1 arrived: 3 lost
    assert len(counters.dropped_by_process) <= _bounded.MAX_KEYS + 1
    assert sum(counters.dropped_by_process.values()) == 10_000
    assert counters.dropped_by_level == {"INFO": 10_000}
    assert len(ledger.lost_by_process) <= _bounded.MAX_KEYS + 1
    assert sum(ledger.lost_by_process.values()) == 15_000
    assert 5000 in counters.dropped_by_process, "the newest are kept by pid"


def test_drop_counts_stay_exact_while_the_counters_lock_is_held_for_good() -> None:
    """A thread frozen holding the counters' lock (interpreter exit): live threads' drops still add up."""
    import sys
    import threading

    from forklog._worker import channel as transport

    channel = transport.Channel(pipe_size=4096)
    frozen = threading.Event()
    release = threading.Event()

    def freeze() -> None:
        with channel._lock:
            frozen.set()
            release.wait(60)

    holder = threading.Thread(target=freeze, daemon=True)
    holder.start()
    frozen.wait(10)
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: races show
    try:
        channel._count_drop("INFO")  # the first waits out the lock once, then knows it is stuck

        def drop_many() -> None:
            for _ in range(20_000):
                channel._count_drop("INFO")

        threads = [threading.Thread(target=drop_many) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    finally:
        sys.setswitchinterval(switch)
        release.set()
        holder.join(10)
    try:
        assert channel.dropped == {"INFO": 80_001}
    finally:
        channel.close()


def test_a_hard_link_in_the_log_directory_is_never_written(tmp_path: Path) -> None:
    """A worker's hard link to another file, named as the log (where protected_hardlinks is off): refused."""
    secret = tmp_path / "secret"
    secret.write_text("root's own\n")
    logs = tmp_path / "logs"
    logs.mkdir()
    os.link(secret, logs / "app.log")
    before = secret.stat()
    sink = forklog.RotatingFileSink(logs / "app.log", maxBytes=1 << 20, backupCount=1)

    def worker() -> None:
        forklog.init_worker(hub.queue)
        logging.getLogger("w").error("into the link")
        hub.queue.leave(timeout=1.0)

    with forklog.Hub([sink]) as hub:
        in_child(worker)
        stats = hub.stop(timeout=10)
    assert secret.read_text() == "root's own\n"
    assert (secret.stat().st_mtime_ns, secret.stat().st_size) == (before.st_mtime_ns, before.st_size)
    assert stats is not None and stats.enqueued == 1
    assert stats.sink_errors["rotatingfilesink"] >= 1, stats
