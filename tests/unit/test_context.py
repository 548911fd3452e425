"""forklog.bind(): fields bound in a context ride on every record logged in it."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from pathlib import Path
from typing import List

import pytest

import forklog
from tests.support import Collect


def hub_logger(hub: forklog.Hub, name: str) -> logging.Logger:
    logger = logging.Logger(name, logging.DEBUG)  # outside the registry: no pytest capture handler
    logger.addHandler(hub.handler())
    return logger


def test_bound_fields_ride_on_records_and_leave_with_the_block(tmp_path: Path) -> None:
    """Inside bound() every record carries the fields, in the JSON file too; outside none does."""
    path = tmp_path / "app.json"
    file_sink = forklog.RotatingFileSink(str(path))
    file_sink.setFormatter(forklog.JSONFormatter())
    collect = Collect()
    with forklog.Hub([collect, file_sink]) as hub:
        log = hub_logger(hub, "ctx")
        log.info("before")
        with forklog.bound(request_id="r-1", user=7):
            log.info("inside")
            log.info("explicit extra wins", extra={"user": 8})
            assert forklog.bound_fields() == {"request_id": "r-1", "user": 7}
        log.info("after")
    by_message = {r.getMessage(): r.__dict__ for r in collect.records}
    assert "request_id" not in by_message["before"] and "request_id" not in by_message["after"]
    assert by_message["inside"]["request_id"] == "r-1" and by_message["inside"]["user"] == 7
    assert by_message["explicit extra wins"]["user"] == 8
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    inside = next(obj for obj in lines if obj["message"] == "inside")
    assert inside["request_id"] == "r-1" and inside["user"] == 7


def test_bind_and_unbind() -> None:
    """bind() adds to what is bound, unbind() takes names away, a LogRecord attribute is refused."""
    with forklog.bound():
        forklog.bind(a=1)
        forklog.bind(b=2)
        assert forklog.bound_fields() == {"a": 1, "b": 2}
        forklog.unbind("a", "missing")
        assert forklog.bound_fields() == {"b": 2}
        with pytest.raises(ValueError, match="msg"):
            forklog.bind(msg="x")
    assert forklog.bound_fields() == {}


def test_threads_keep_their_own_fields() -> None:
    """Two threads (gthread's request threads) each see only what they bound."""
    collect = Collect()
    barrier = threading.Barrier(2)
    with forklog.Hub([collect]) as hub:
        log = hub_logger(hub, "threads")

        def request(rid: str) -> None:
            forklog.bind(request_id=rid)
            for k in range(50):
                if k == 10:
                    barrier.wait(5)  # interleave the two requests
                log.info("%s %d", rid, k)

        threads = [threading.Thread(target=request, args=(rid,)) for rid in ("t1", "t2")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
    assert len(collect.records) == 100
    for record in collect.records:
        assert record.getMessage().split()[0] == record.__dict__["request_id"]


def test_asyncio_tasks_keep_their_own_fields() -> None:
    """Concurrent asyncio tasks each carry their own bound fields across awaits."""
    collect = Collect()
    with forklog.Hub([collect]) as hub:
        log = hub_logger(hub, "tasks")

        async def request(rid: str, order: List[str]) -> None:
            with forklog.bound(request_id=rid):
                for k in range(20):
                    log.info("%s %d", rid, k)
                    order.append(rid)
                    await asyncio.sleep(0)  # hand over to the other tasks

        async def main() -> List[str]:
            order: List[str] = []
            await asyncio.gather(*(request(f"a{n}", order) for n in range(3)))
            return order

        order = asyncio.run(main())
    assert order[:3] == ["a0", "a1", "a2"], "the tasks ran interleaved"
    assert len(collect.records) == 60
    for record in collect.records:
        assert record.getMessage().split()[0] == record.__dict__["request_id"]


def test_the_active_span_is_captured() -> None:
    """A record logged inside an OpenTelemetry span carries its trace and span ids."""
    from opentelemetry import trace  # the test extra installs opentelemetry-sdk
    from opentelemetry.sdk.trace import TracerProvider

    tracer = TracerProvider().get_tracer("forklog-test")
    collect = Collect()
    with forklog.Hub([collect]) as hub:
        log = hub_logger(hub, "otel")
        log.info("outside")
        with tracer.start_as_current_span("request") as span:
            log.info("inside")
            context = span.get_span_context()
    outside, inside = (r.__dict__ for r in collect.records)
    assert "otelTraceID" not in outside
    assert inside["otelTraceID"] == format(context.trace_id, "032x")
    assert inside["otelSpanID"] == format(context.span_id, "016x")
    assert inside["otelTraceSampled"] is True
    assert trace.get_current_span().get_span_context().is_valid is False


def test_context_filter_serves_a_stock_handler() -> None:
    """ContextFilter gives any handler the same fields."""
    collect = Collect()
    collect.addFilter(forklog.ContextFilter())
    logger = logging.Logger("plain", logging.DEBUG)
    logger.addHandler(collect)
    with forklog.bound(job="nightly"):
        logger.info("x")
    assert collect.records[0].__dict__["job"] == "nightly"
