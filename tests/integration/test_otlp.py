"""OTLPSink in a real hub: records from real worker processes reach a local OTLP/HTTP receiver."""

from __future__ import annotations

import contextlib
import itertools
import logging
import multiprocessing
import os
import socket
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import psutil
import pytest

import forklog
from forklog.otlp import OTLPSink
from tests.integration.otlp_receiver import OTLPReceiver, Received, at_least
from tests.support import wait_for

RECORDS = 60  # per task: one with a traceback, every tenth a warning
TASKS = 6


@pytest.fixture
def receiver() -> Iterator[OTLPReceiver]:
    with OTLPReceiver() as rcv:
        yield rcv


def work(task: int) -> int:
    """A pool task: logs RECORDS records with a bound field, extras and one traceback."""
    log = logging.getLogger("otlp.work")
    with forklog.bound(task=task):
        for i in range(RECORDS):
            if i == 7:
                try:
                    raise LookupError(f"no row {task}")
                except LookupError:
                    log.exception("task=%d i=%d failed", task, i, extra={"i": i})
            elif i % 10 == 3:
                log.warning("task=%d i=%d slow", task, i, extra={"i": i})
            else:
                log.info("task=%d i=%d", task, i, extra={"i": i, "tags": ["t", task]})
    return os.getpid()


def key(record: Received) -> Tuple[int, int]:
    fields = dict(part.split("=", 1) for part in str(record.body).split()[:2])
    return int(fields["task"]), int(fields["i"])


def check_work(records: List[Received], pids: List[int]) -> None:
    """Every record of every task once, in per-process order, each field where it belongs."""
    mine = [record for record in records if record.scope == "otlp.work"]
    seen: Dict[Tuple[int, int], int] = {}
    order: Dict[object, List[Tuple[int, int]]] = {}
    for record in mine:
        task, i = key(record)
        seen[(task, i)] = seen.get((task, i), 0) + 1
        order.setdefault(record.attributes["process.pid"], []).append((task, i))
        assert record.attributes["task"] == task and record.attributes["i"] == i
        assert record.resource["service.name"] == "otlp-test"
        assert "Traceback" not in str(record.body)
        if i == 7:
            assert (record.severity_number, record.severity_text) == (17, "ERROR")
            assert record.attributes["exception.type"] == "LookupError"
            assert record.attributes["exception.message"] == f"no row {task}"
            stack = str(record.attributes["exception.stacktrace"])
            assert stack.startswith("Traceback (most recent call last):")
            assert stack.rstrip().endswith(f"LookupError: no row {task}")
            assert record.body == f"task={task} i=7 failed"
        elif i % 10 == 3:
            assert (record.severity_number, record.severity_text) == (13, "WARNING")
        else:
            assert (record.severity_number, record.severity_text) == (9, "INFO")
            assert record.attributes["tags"] == ["t", task]
            assert record.body == f"task={task} i={i}"
    assert seen == {(task, i): 1 for task in range(TASKS) for i in range(RECORDS)}
    for pid, keys in order.items():
        assert keys == sorted(keys), f"pid {pid}: out of order"
    assert set(order) == set(pids), "process.pid is the worker's pid"


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_pool_records_arrive_once_in_order(method: str, receiver: OTLPReceiver) -> None:
    """Pool workers' records arrive once each, in order, with their severity, body, attributes and pid."""
    sink = OTLPSink(receiver.endpoint, service_name="otlp-test")
    with forklog.Hub([("otlp", sink)]) as hub:
        ctx = multiprocessing.get_context(method)
        with ctx.Pool(2, initializer=forklog.init_worker, initargs=(hub.queue,)) as pool:
            pids = pool.map(work, range(TASKS), chunksize=1)
    stats = hub.stats()
    assert stats.written["otlp"] >= TASKS * RECORDS and stats.dropped_by_sink["otlp"] == 0
    assert stats.sink_errors.get("otlp", 0) == 0 and receiver.errors == []
    check_work(receiver.records, pids)
    assert {encoding for _status, encoding, _n, _t in receiver.requests} == {"gzip"}


def hub_logger(hub: forklog.Hub, name: str) -> logging.Logger:
    """A logger of this process that sends every level to ``hub`` only."""
    log = logging.getLogger(name)
    log.propagate = False
    log.handlers[:] = [hub.handler()]
    log.setLevel(logging.DEBUG)
    return log


def log_many(queue: forklog.Channel, count: int, name: str) -> None:
    forklog.init_worker(queue)
    log = logging.getLogger(name)
    for index in range(count):
        log.info("n=%d", index)


def test_records_go_in_batches(receiver: OTLPReceiver) -> None:
    """Records that wait while a request is out go in the next ones, batch_size at a time: 1000 in <= 11."""
    receiver.hold = threading.Event()
    sink = OTLPSink(receiver.endpoint, service_name="otlp-test", batch_size=100)
    with forklog.Hub([("otlp", sink)]) as hub:
        child = multiprocessing.get_context("fork").Process(target=log_many, args=(hub.queue, 1000, "batch"))
        child.start()
        child.join(60)
        assert child.exitcode == 0
        assert receiver.held.wait(10), "the first request never came"
        wait_for(lambda: hub.stats().written.get("otlp", 0) == 1000, 10, "the sink to get every record")
        receiver.hold.set()
        receiver.wait_for(at_least(1000), 10, "every record")
    sizes = [count for status, _encoding, count, _t in receiver.requests if status == 200]
    assert sum(sizes) == 1000 and max(sizes) <= 100
    assert len(sizes) <= 1 + 10, sizes  # the first request, then full batches
    assert [str(record.body) for record in receiver.records] == [f"n={index}" for index in range(1000)]


def test_unavailable_then_ok_loses_and_repeats_nothing() -> None:
    """Two 503s with Retry-After: 1, then OK: every record once, each retry after the server's delay."""
    with OTLPReceiver(fail_first=2, fail_status=503, retry_after="1") as receiver:
        sink = OTLPSink(receiver.endpoint, service_name="otlp-test", max_backoff=0.2)
        with forklog.Hub([("otlp", sink)]) as hub:
            child = multiprocessing.get_context("fork").Process(
                target=log_many, args=(hub.queue, 300, "retry")
            )
            child.start()
            child.join(60)
            assert child.exitcode == 0
            receiver.wait_for(at_least(300), 15, "every record after the 503s")
        stats = hub.stats()
    assert [str(record.body) for record in receiver.records] == [f"n={index}" for index in range(300)]
    statuses = [status for status, _encoding, _n, _t in receiver.requests]
    assert statuses[:3] == [503, 503, 200]
    times = [when for _status, _encoding, _n, when in receiver.requests]
    assert times[1] - times[0] >= 0.9 and times[2] - times[1] >= 0.9, "Retry-After: 1 was not honoured"
    assert sink.failures == 2 and stats.dropped_by_sink["otlp"] == 0
    assert stats.sink_errors["otlp"] == 2  # each failure reported


def test_refused_batch_is_dropped_counted_and_reported() -> None:
    """A 400 drops that batch only: counted in dropped_by_sink, reported, and the next records still go."""
    with OTLPReceiver(fail_first=1, fail_status=400) as receiver:
        sink = OTLPSink(receiver.endpoint, service_name="otlp-test")
        with forklog.Hub([("otlp", sink)]) as hub:
            log = hub_logger(hub, "refused")
            log.warning("refused one")
            wait_for(lambda: len(receiver.requests) == 1, 10, "the refused request")
            for index in range(5):
                log.warning("accepted %d", index)
            receiver.wait_for(at_least(5), 10, "the records after the refusal")
        stats = hub.stats()
    mine = [record.body for record in receiver.records if record.scope == "refused"]
    assert mine == [f"accepted {index}" for index in range(5)]
    # The hub's own report of the drop reaches the collector too.
    assert "forklog: sink otlp could not write 1 records (1 in all)" in [r.body for r in receiver.records]
    assert stats.dropped_by_sink["otlp"] == 1 and sink.rejected == 1 and sink.failures == 0
    assert stats.sink_errors["otlp"] == 1


def test_a_partial_success_counts_the_rejected_records() -> None:
    """A collector that takes a batch but rejects part of it: the rejected count as the sink's drops."""
    with OTLPReceiver() as receiver:
        receiver.reject_one = True
        sink = OTLPSink(receiver.endpoint, service_name="otlp-test")
        receiver.hold = threading.Event()  # while the first request waits, the others gather
        with forklog.Hub([("otlp", sink)]) as hub:
            log = hub_logger(hub, "partial")
            for index in range(3):
                log.warning("partial %d", index)
            wait_for(receiver.held.is_set, 10, "the first request")
            wait_for(lambda: hub.stats().enqueued == 3, 10, "the others to reach the sink's buffer")
            receiver.hold.set()
            receiver.wait_for(at_least(3), 10, "the records")
            wait_for(lambda: sink.rejected == 1, 10, "the rejection counted")
            stats = hub.stats()
    assert max(count for _status, _enc, count, _t in receiver.requests) > 1, "no request of several records"
    assert stats.dropped_by_sink["otlp"] == 1 and sink.dropped == 1 and sink.pending == 0


def test_a_closed_keep_alive_connection_is_not_a_failure() -> None:
    """A collector that closes idle connections: the request goes again on a new one, with no failure."""
    with OTLPReceiver() as receiver:
        receiver.drop_connections = True
        sink = OTLPSink(receiver.endpoint, service_name="otlp-test")
        with forklog.Hub([("otlp", sink)]) as hub:
            log = hub_logger(hub, "idle")
            for index in range(4):
                log.info("r%d", index)
                receiver.wait_for(at_least(index + 1), 10, f"record {index}")
    assert [record.body for record in receiver.records] == ["r0", "r1", "r2", "r3"]
    assert sink.failures == 0


@contextlib.contextmanager
def refusing_port() -> Iterator[int]:
    """A loopback port that is bound (so no one else takes it) but refuses connections."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def test_dead_receiver_costs_the_file_nothing_and_counts_each_drop_once(tmp_path: Path) -> None:
    """With no receiver the file sink gets every record; each OTLP one is counted dropped, once."""
    path = tmp_path / "app.log"
    file_sink = forklog.RotatingFileSink(str(path))
    file_sink.setFormatter(logging.Formatter("%(message)s"))
    with refusing_port() as port:
        sink = OTLPSink(f"http://127.0.0.1:{port}/v1/logs", close_timeout=1.0, max_backoff=0.2)
        hub = forklog.Hub([("file", file_sink), ("otlp", sink)], stop_timeout=5).start()
        try:
            child = multiprocessing.get_context("fork").Process(
                target=log_many, args=(hub.queue, 500, "dead")
            )
            child.start()
            child.join(60)
            assert child.exitcode == 0
            wait_for(lambda: path.read_text().count("\n") == 500, 10, "the file to have every record")
            wait_for(lambda: sink.failures >= 2, 10, "the sink to fail twice")
        finally:
            started = time.monotonic()
            stats = hub.stop()
            stopped_in = time.monotonic() - started
    assert stats is not None
    lines = path.read_text().splitlines()
    assert lines[:500] == [f"n={index}" for index in range(500)], lines[500:]
    assert len(lines) == 501 and lines[500].startswith(
        "forklog: sink otlp could not write "
    )  # said in the file
    assert stats.written["otlp"] == 500
    assert stats.dropped_by_sink["otlp"] >= 500  # at least: the exact count is the sink's, below
    assert stats.sink_errors["otlp"] >= 2
    assert stopped_in < 3, f"stop() took {stopped_in:.1f}s"
    assert sink.failures < 60, "retried without a pause"
    # Once the sink's thread has ended, it has counted each of the 500 records dropped once.
    thread = sink._thread
    assert thread is not None
    thread.join(10)
    assert not thread.is_alive()
    assert sink.dropped == 500


def test_retry_after_is_capped_and_does_not_hold_back_stop() -> None:
    """Retry-After: 3600 waits max_retry_after between attempts, and stop() does not wait for it."""
    with OTLPReceiver(fail_first=10**6, fail_status=503, retry_after="3600") as receiver:
        sink = OTLPSink(receiver.endpoint, max_retry_after=0.5, close_timeout=1.0)
        hub = forklog.Hub([("otlp", sink)], stop_timeout=3).start()
        log = hub_logger(hub, "capped")
        for index in range(5):
            log.info("r%d", index)
        wait_for(lambda: len(receiver.requests) >= 3, 10, "three attempts")
        started = time.monotonic()
        stats = hub.stop()
        stopped_in = time.monotonic() - started
    assert stats is not None and stats.dropped_by_sink["otlp"] == 5
    assert stopped_in < 2.5, f"stop() took {stopped_in:.1f}s"
    times = [when for _status, _encoding, _n, when in receiver.requests]
    gaps = [later - earlier for earlier, later in itertools.pairwise(times[:3])]
    assert all(0.45 <= gap < 3 for gap in gaps), gaps
    assert len(receiver.requests) < 30, "a 503 collector was hammered at close"


def threads_and_connections(port: int) -> Tuple[List[str], List[Any]]:
    """In a pool child: its threads, and its sockets connected to ``port``."""
    peers = [c for c in psutil.Process().net_connections("inet") if c.raddr and c.raddr.port == port]
    return [thread.name for thread in threading.enumerate()], peers


@pytest.mark.parametrize("moment", ["idle", "mid-request"])
def test_a_forked_worker_gets_no_thread_and_no_connection(moment: str, receiver: OTLPReceiver) -> None:
    """A worker forked while the sink's thread and connection live has one thread and no collector socket."""
    if moment == "mid-request":
        receiver.hold = threading.Event()  # the sink's thread waits for the answer
    sink = OTLPSink(receiver.endpoint, service_name="otlp-test")
    with forklog.Hub([("otlp", sink)]) as hub:
        hub_logger(hub, "before-fork").info("connect first")
        if receiver.hold is not None:
            assert receiver.held.wait(10), "the request never came"
        else:
            wait_for(lambda: sink.delivered == 1, 10, "the first record delivered")
        assert any(thread.name.startswith("forklog-sink-otlp") for thread in threading.enumerate())
        assert sink._conn is not None and sink._conn.sock is not None  # a live keep-alive connection
        with multiprocessing.get_context("fork").Pool(1) as pool:
            names, peers = pool.apply(threads_and_connections, (receiver.port,))
        if receiver.hold is not None:
            receiver.hold.set()
    assert names == ["MainThread"], names
    assert peers == []
    assert [record.body for record in receiver.records] == ["connect first"]


def traced(task: int) -> Tuple[str, str, int]:
    """In a worker: log inside an SDK span and outside it; return the span's ids and the pid."""
    from opentelemetry.sdk.trace import TracerProvider

    tracer = TracerProvider().get_tracer("forklog-test")
    log = logging.getLogger("otlp.traced")
    with tracer.start_as_current_span("job") as span:
        log.info("inside task=%d", task)
        context = span.get_span_context()
    log.info("outside task=%d", task)
    return format(context.trace_id, "032x"), format(context.span_id, "016x"), os.getpid()


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_span_ids_reach_the_collector(method: str, receiver: OTLPReceiver) -> None:
    """A worker logging inside an SDK span: the receiver sees that span's trace and span ids on the record."""
    sink = OTLPSink(receiver.endpoint, service_name="otlp-test")
    with forklog.Hub([("otlp", sink)]) as hub:
        ctx = multiprocessing.get_context(method)
        with ctx.Pool(2, initializer=forklog.init_worker, initargs=(hub.queue,)) as pool:
            spans = pool.map(traced, range(4), chunksize=1)
    mine = [record for record in receiver.records if record.scope == "otlp.traced"]
    expected = Counter(f"{where} task={task}" for task in range(4) for where in ("inside", "outside"))
    assert Counter(str(record.body) for record in mine) == expected, "a record lost or repeated"
    by_body = {str(record.body): record for record in mine}
    for task, (trace_id, span_id, pid) in enumerate(spans):
        inside = by_body[f"inside task={task}"]
        assert inside.trace_id == bytes.fromhex(trace_id) and inside.span_id == bytes.fromhex(span_id)
        assert inside.flags == 1  # sampled
        assert inside.attributes["process.pid"] == pid
        assert not any(name.startswith("otel") for name in inside.attributes)
        outside = by_body[f"outside task={task}"]
        assert (outside.trace_id, outside.span_id) == (b"", b"")
    assert len({trace_id for trace_id, _span, _pid in spans}) == 4
