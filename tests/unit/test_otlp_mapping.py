"""How OTLPSink turns a record, as the master receives it, into OTLP protobuf."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
from typing import Any, Dict, List

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord as OTLPLogRecord

from forklog import _wire as wire
from forklog import otlp
from forklog.otlp import OTLPSink, severity_number
from tests.integration.otlp_receiver import plain

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
SPAN_ID = "b7ad6b7169203331"


def sink(**options: Any) -> OTLPSink:
    return OTLPSink("http://127.0.0.1:9/v1/logs", **options)


def make(
    msg: str, *args: object, level: int = logging.INFO, exc_info: Any = None, **extra: Any
) -> logging.LogRecord:
    """A record as the master gets it: encoded in a worker (pid 4242), decoded."""
    record = logging.LogRecord("app.orders", level, "/srv/app/orders.py", 31, msg, args, exc_info, "checkout")
    record.__dict__.update(extra)
    return wire.decode(wire.encode(record), 4242)


def attributes(log_record: OTLPLogRecord) -> Dict[str, object]:
    keys = [pair.key for pair in log_record.attributes]
    assert len(keys) == len(set(keys)), f"duplicate attribute keys: {keys}"
    return {pair.key: plain(pair.value) for pair in log_record.attributes}


def decode(body: bytes) -> ExportLogsServiceRequest:
    request = ExportLogsServiceRequest()
    request.ParseFromString(body)
    return request


@pytest.mark.parametrize(
    ("levelno", "expected"),
    [
        (logging.NOTSET, 0),
        (5, 1),
        (logging.DEBUG, 5),
        (11, 6),
        (19, 8),
        (logging.INFO, 9),
        (25, 12),
        (logging.WARNING, 13),
        (logging.ERROR, 17),
        (logging.CRITICAL, 21),
        (53, 24),
        (100, 24),
    ],
)
def test_severity_number(levelno: int, expected: int) -> None:
    """Each logging level maps to its OTLP severity band, steps within a band capped at the fourth."""
    assert severity_number(levelno) == expected


def test_a_plain_record() -> None:
    """Body, times, severity, the worker's pid and the code location are mapped; nothing else is invented."""
    record = make("order %d paid by %s", 12, "ann", level=logging.WARNING)
    out = sink().log_record(record, observed=1_700_000_000_123_456_789)
    assert plain(out.body) == "order 12 paid by ann"
    assert (out.severity_number, out.severity_text) == (13, "WARNING")
    assert abs(out.time_unix_nano - record.created * 1e9) < 1e3
    assert out.observed_time_unix_nano == 1_700_000_000_123_456_789
    assert (out.trace_id, out.span_id, out.flags) == (b"", b"", 0)
    assert attributes(out) == {
        "code.file.path": "/srv/app/orders.py",
        "code.function.name": "checkout",
        "code.line.number": 31,
        "process.pid": 4242,
        "thread.id": threading.get_ident(),
        "thread.name": threading.current_thread().name,
    }


def test_extras_keep_their_types() -> None:
    """Extras and bound fields become attributes of the matching AnyValue type; others their repr."""
    record = make(
        "typed",
        request_id="r-42",
        count=3,
        ratio=0.5,
        ok=True,
        tags=["a", 1, None],
        empty=[],
        user={"id": 7, "roles": {"admin": False}},
        huge=2**70,
        nothing=None,
    )
    record.__dict__["lock"] = threading.Lock()  # set in the master: never went through the wire
    got = attributes(sink().log_record(record))
    assert got["request_id"] == "r-42" and got["count"] == 3 and got["ratio"] == 0.5 and got["ok"] is True
    assert got["tags"] == ["a", 1, None] and got["empty"] == []
    assert got["user"] == {"id": 7, "roles": {"admin": False}}
    assert got["huge"] == str(2**70)  # beyond int64: text, not an error
    assert str(got["lock"]).startswith("<unlocked _thread.lock")
    assert "nothing" not in got  # OTLP attributes are never null


def test_an_extra_named_like_an_attribute_of_the_sink_is_renamed() -> None:
    """An extra called process.pid does not replace the worker's pid: it becomes extra.process.pid."""
    clashing: Dict[str, Any] = {"process.pid": 1, "thread.name": "mine"}
    got = attributes(sink().log_record(make("clash", **clashing)))
    assert got["process.pid"] == 4242 and got["extra.process.pid"] == 1
    assert got["extra.thread.name"] == "mine"


def test_exception_attributes() -> None:
    """A record logged with exc_info carries exception.type, exception.message and exception.stacktrace."""
    try:
        raise ConnectionRefusedError(111, "refused by db")
    except ConnectionRefusedError:
        record = make("db down", level=logging.ERROR, exc_info=sys.exc_info())
    got = attributes(sink().log_record(record))
    assert got["exception.type"] == "ConnectionRefusedError"
    assert got["exception.message"] == "[Errno 111] refused by db"
    stack = str(got["exception.stacktrace"])
    assert stack.startswith("Traceback (most recent call last):") and "test_exception_attributes" in stack
    assert plain(sink().log_record(record).body) == "db down"  # the traceback is not in the body
    assert not any(key.startswith("forklog_") for key in got)


def test_exception_of_a_record_made_in_the_master() -> None:
    """A record that never crossed the wire (exc_info still set) gets the same exception attributes."""
    try:
        raise ValueError("bad input")
    except ValueError:
        record = logging.LogRecord("m", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    got = attributes(sink().log_record(record))
    assert (got["exception.type"], got["exception.message"]) == ("ValueError", "bad input")
    assert "ValueError: bad input" in str(got["exception.stacktrace"])


def test_stack_info_is_code_stacktrace() -> None:
    """stack_info (log(..., stack_info=True)) is sent as code.stacktrace."""
    record = make("where am I")
    record.stack_info = stack = "Stack (most recent call last):\n  File x"
    assert attributes(sink().log_record(record))["code.stacktrace"] == stack


def test_span_ids_become_the_trace_context() -> None:
    """otelTraceID, otelSpanID and otelTraceSampled set trace_id, span_id and flags, not attributes."""
    out = sink().log_record(
        make("in a span", otelTraceID=TRACE_ID, otelSpanID=SPAN_ID, otelTraceSampled=True)
    )
    assert out.trace_id == bytes.fromhex(TRACE_ID) and out.span_id == bytes.fromhex(SPAN_ID)
    assert out.flags == 1
    assert not any(key.startswith("otel") for key in attributes(out))
    unsampled = sink().log_record(make("x", otelTraceID=TRACE_ID, otelSpanID=SPAN_ID, otelTraceSampled=False))
    assert unsampled.trace_id == bytes.fromhex(TRACE_ID) and unsampled.flags == 0


def test_no_span_and_malformed_ids() -> None:
    """The "0" of instrumentation-logging means no span; malformed ids are kept as attributes, not lost."""
    none = sink().log_record(
        make("x", otelTraceID="0", otelSpanID="0", otelTraceSampled=False, otelServiceName="")
    )
    assert none.trace_id == b"" and not any(key.startswith("otel") for key in attributes(none))
    bad = sink().log_record(make("x", otelTraceID="not-hex", otelSpanID=SPAN_ID, otelTraceSampled=True))
    assert bad.trace_id == b""
    assert attributes(bad)["otelTraceID"] == "not-hex" and attributes(bad)["otelSpanID"] == SPAN_ID


def test_lone_surrogates_are_escaped() -> None:
    """Text with a lone surrogate (valid on the wire, not UTF-8) is sent with a backslash escape."""
    out = sink().log_record(make("bad \udcff byte", path="/tmp/\udcff"))
    assert plain(out.body) == "bad \\udcff byte" and attributes(out)["path"] == "/tmp/\\udcff"
    out.SerializeToString()  # valid protobuf


def test_a_record_that_cannot_be_mapped_says_so() -> None:
    """A record whose fields are unusable becomes a record that says why, at its level, not an exception."""
    record = make("odd")
    record.created = "yesterday"  # type: ignore[assignment]  # a filter in the master did this
    out = sink().log_record(record)
    assert str(plain(out.body)).startswith("forklog: could not encode a record for OTLP: ")
    assert out.severity_number == 17


def test_one_scope_per_run_of_a_logger_keeps_order() -> None:
    """Records are grouped into a scope per logger run, in order; the resource is sent once per request."""
    names = ["a", "a", "b", "a"]
    records = []
    for index, name in enumerate(names):
        record = make(f"m{index}")
        record.name = name
        records.append(record)
    ((body, end),) = sink(service_name="shop").encode(records)
    assert end == 4
    (resource_logs,) = decode(body).resource_logs
    assert {pair.key: plain(pair.value) for pair in resource_logs.resource.attributes}[
        "service.name"
    ] == "shop"
    scopes = [
        (scope.scope.name, [plain(r.body) for r in scope.log_records]) for scope in resource_logs.scope_logs
    ]
    assert scopes == [("a", ["m0", "m1"]), ("b", ["m2"]), ("a", ["m3"])]


def test_requests_are_split_at_max_request_bytes() -> None:
    """A batch bigger than max_request_bytes goes in several requests, in order, each under the limit."""
    records = [make("r%03d %s", index, "x" * 1000) for index in range(50)]
    for index, record in enumerate(records):
        record.name = f"logger{index // 3}"  # scopes that start at a split too
    out = sink(max_request_bytes=10_000).encode(records)
    assert len(out) >= 5
    bodies: List[str] = []
    for body, _end in out:
        assert len(body) <= 10_000 + 500  # the limit counts the records, not the envelope
        request = decode(body)
        bodies += [str(plain(r.body))[:4] for s in request.resource_logs[0].scope_logs for r in s.log_records]
    assert bodies == [f"r{index:03d}" for index in range(50)]
    for body, _end in out:
        assert all(len(scope.log_records) > 0 for scope in decode(body).resource_logs[0].scope_logs)
    ends = [end for _body, end in out]
    assert ends == sorted(ends) and ends[-1] == 50


def test_filtered_records_are_left_out() -> None:
    """The sink's own filters run in its thread, once per batch: rejected records are never encoded."""
    quiet = sink()
    quiet.addFilter(lambda record: "secret" not in record.getMessage())
    admitted = [r for r in (make("a"), make("a secret"), make("b"), make("secret again")) if quiet._admit(r)]
    ((body, end),) = quiet.encode(admitted)
    assert end == 2
    sent = [plain(r.body) for r in decode(body).resource_logs[0].scope_logs[0].log_records]
    assert sent == ["a", "b"]
    assert quiet.dropped == 0, "a record a filter rejects is not a drop"


def test_resource_from_arguments_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Arguments win over OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES, which win over the defaults."""
    monkeypatch.setenv(
        "OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=prod,team=pay%20ments,service.name=x"
    )
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-env")
    assert sink().resource_attributes["service.name"] == "from-env"
    assert sink().resource_attributes["team"] == "pay ments"
    chosen = sink(
        service_name="api", resource_attributes={"deployment.environment": "staging", "replicas": 3}
    )
    assert chosen.resource_attributes["service.name"] == "api"
    assert chosen.resource_attributes["deployment.environment"] == "staging"
    assert chosen.resource_attributes["replicas"] == 3
    monkeypatch.delenv("OTEL_SERVICE_NAME")
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES")
    default = sink().resource_attributes
    assert str(default["service.name"]).startswith("unknown_service:")
    assert default["telemetry.sdk.name"] == "forklog"


def test_endpoint_and_headers_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without arguments the standard OTEL_EXPORTER_OTLP_* variables set the endpoint and headers."""
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    assert OTLPSink().endpoint == "http://localhost:4318/v1/logs"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4318/")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "api-key=s3cr%3Dt,x-team=pay")
    from_env = OTLPSink()
    assert from_env.endpoint == "https://collector:4318/v1/logs"
    assert from_env._headers["api-key"] == "s3cr=t" and from_env._headers["x-team"] == "pay"
    assert "s3cr" not in repr(from_env)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "http://logs:9999/custom")
    assert OTLPSink().endpoint == "http://logs:9999/custom"
    assert "api-key" not in OTLPSink(headers={"x": "1"})._headers


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"endpoint": "collector:4318"}, "endpoint='collector:4318'"),
        ({"endpoint": "ftp://collector/v1/logs"}, "endpoint='ftp://collector/v1/logs'"),
        ({"endpoint": "http://collector:99999/v1/logs"}, "endpoint='http://collector:99999/v1/logs'"),
        ({"compression": "zstd"}, "compression='zstd'"),
        ({"timeout": 0}, "timeout=0"),
        ({"batch_size": 0}, "batch_size=0"),
    ],
)
def test_bad_options_fail_at_once(options: Dict[str, Any], named: str) -> None:
    """A bad option is a ValueError naming the option and its value, when the sink is built."""
    options.setdefault("endpoint", "http://127.0.0.1:9/v1/logs")
    with pytest.raises(ValueError, match=named.replace("(", r"\(")):
        OTLPSink(**options)


def test_missing_extra_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without opentelemetry-proto, building a sink raises ImportError naming pip install 'forklog[otlp]'."""
    otlp._proto.cache_clear()
    monkeypatch.setitem(sys.modules, "opentelemetry.proto.logs.v1", None)
    try:
        with pytest.raises(ImportError, match=r"pip install 'forklog\[otlp\]'"):
            sink()
    finally:
        otlp._proto.cache_clear()


def test_importing_the_module_imports_no_protobuf() -> None:
    """import forklog.otlp loads neither opentelemetry nor protobuf (they are loaded by the first sink)."""
    code = (
        "import sys, forklog.otlp; "
        "print(sorted(m for m in sys.modules if m.startswith(('opentelemetry', 'google'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"
