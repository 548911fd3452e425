"""A local OTLP/HTTP logs receiver for the tests: decodes what an exporter POSTs.

A stdlib ``ThreadingHTTPServer`` on a free loopback port. ``POST /v1/logs``
with an ``ExportLogsServiceRequest`` (gzip or not) is decoded and kept;
the answer is an empty ``ExportLogsServiceResponse``. It can answer a
status of the test's choosing to the first requests (``fail_first``), hold
every answer until the test opens a gate (``hold``), and refuse anything
that is not OTLP protobuf, so a test sees a sender's mistakes as failures.
"""

from __future__ import annotations

import gzip
import http.server
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue


def plain(value: AnyValue) -> object:
    """An ``AnyValue`` as the Python value it holds (None when it holds nothing)."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [plain(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return {pair.key: plain(pair.value) for pair in value.kvlist_value.values}
    return getattr(value, kind)


def at_least(count: int) -> Callable[[List[Received]], bool]:
    """A ``wait_for`` condition: ``count`` records or more have arrived."""
    return lambda records: len(records) >= count


@dataclass
class Received:
    """One decoded log record, with where it came from."""

    body: object
    severity_number: int
    severity_text: str
    time_unix_nano: int
    observed_time_unix_nano: int
    trace_id: bytes
    span_id: bytes
    flags: int
    scope: str
    resource: Dict[str, object]
    attributes: Dict[str, object]
    #: Which request it came in (0 is the first accepted one).
    request: int
    #: Attribute keys in the order they were sent (to check for duplicates).
    keys: List[str] = field(default_factory=list)


class OTLPReceiver:
    """Decodes and keeps every log record POSTed to ``/v1/logs`` (``with OTLPReceiver() as rcv:``)."""

    def __init__(
        self, *, fail_first: int = 0, fail_status: int = 503, retry_after: Optional[str] = None
    ) -> None:
        self.fail_first = fail_first
        #: Close each connection after answering, without saying so (an idle timeout).
        self.drop_connections = False
        self.fail_status = fail_status
        self.retry_after = retry_after
        #: Answer the first request of several records with a partial success rejecting one of them.
        self.reject_one = False
        self.records: List[Received] = []
        #: Every request, accepted or not: (status answered, content encoding, records in it, monotonic time).
        self.requests: List[Tuple[int, str, int, float]] = []
        self.errors: List[str] = []
        self.arrived = threading.Condition()
        self.hold: Optional[threading.Event] = None
        self.held = threading.Event()  # a request is waiting at the gate
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as a collector does

            def do_POST(self) -> None:
                receiver._handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: the test reads ``requests`` instead."""

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port: int = self.server.server_address[1]
        self.endpoint = f"http://127.0.0.1:{self.port}/v1/logs"
        self._thread = threading.Thread(
            target=self.server.serve_forever, args=(0.05,), name="otlp-receiver", daemon=True
        )

    def __enter__(self) -> OTLPReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.hold is not None:
            self.hold.set()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)

    def _handle(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length", "0"))
        data = handler.rfile.read(length)
        encoding = handler.headers.get("Content-Encoding", "")
        if self.hold is not None:
            self.held.set()
            self.hold.wait(30)
        with self.arrived:
            failing = len([r for r in self.requests if r[0] == self.fail_status]) < self.fail_first
        if handler.path != "/v1/logs" or handler.headers.get("Content-Type") != "application/x-protobuf":
            self._answer(handler, 415, b"", 0, encoding)
            with self.arrived:
                self.errors.append(f"{handler.path} {handler.headers.get('Content-Type')}")
            return
        if failing:
            self._answer(handler, self.fail_status, b"try later", 0, encoding)
            return
        try:
            request = ExportLogsServiceRequest.FromString(
                gzip.decompress(data) if encoding == "gzip" else data
            )
        except Exception as exc:
            with self.arrived:
                self.errors.append(f"undecodable request: {exc!r}")
            self._answer(handler, 400, b"undecodable", 0, encoding)
            return
        decoded = self._decode(request)
        with self.arrived:  # kept before the answer: a sender that got its 200 finds them here
            index = len([r for r in self.requests if r[0] == 200])
            for record in decoded:
                record.request = index
            self.records.extend(decoded)
            self.arrived.notify_all()
        answer = ExportLogsServiceResponse()
        if self.reject_one and len(decoded) > 1:
            self.reject_one = False
            answer.partial_success.rejected_log_records = 1
            answer.partial_success.error_message = "too old"
        self._answer(handler, 200, answer.SerializeToString(), len(decoded), encoding)

    def _answer(
        self, handler: http.server.BaseHTTPRequestHandler, status: int, body: bytes, count: int, encoding: str
    ) -> None:
        with self.arrived:
            self.requests.append((status, encoding, count, time.monotonic()))
        handler.send_response(status)
        handler.send_header("Content-Type", "application/x-protobuf")
        handler.send_header("Content-Length", str(len(body)))
        if status != 200 and self.retry_after is not None:
            handler.send_header("Retry-After", self.retry_after)
        handler.end_headers()
        handler.wfile.write(body)
        if self.drop_connections:
            handler.close_connection = True

    @staticmethod
    def _decode(request: ExportLogsServiceRequest) -> List[Received]:
        out: List[Received] = []
        for resource_logs in request.resource_logs:
            resource = {pair.key: plain(pair.value) for pair in resource_logs.resource.attributes}
            for scope_logs in resource_logs.scope_logs:
                for record in scope_logs.log_records:
                    out.append(
                        Received(
                            body=plain(record.body),
                            severity_number=record.severity_number,
                            severity_text=record.severity_text,
                            time_unix_nano=record.time_unix_nano,
                            observed_time_unix_nano=record.observed_time_unix_nano,
                            trace_id=record.trace_id,
                            span_id=record.span_id,
                            flags=record.flags,
                            scope=scope_logs.scope.name,
                            resource=resource,
                            attributes={pair.key: plain(pair.value) for pair in record.attributes},
                            request=-1,
                            keys=[pair.key for pair in record.attributes],
                        )
                    )
        return out

    def wait_for(self, condition: Callable[[List[Received]], bool], timeout: float, what: str) -> None:
        """Wait until ``condition(records)`` holds; fail with ``what`` after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self.arrived:
            while not condition(self.records):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"timed out after {timeout}s waiting for {what}: "
                        f"{len(self.records)} records, requests {[r[:3] for r in self.requests]}"
                    )
                self.arrived.wait(left)

    def accepted_requests(self) -> int:
        with self.arrived:
            return len([r for r in self.requests if r[0] == 200])
