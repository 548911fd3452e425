"""An OTLP/HTTP sink: the master exports records to an OpenTelemetry collector.

Needs the ``otlp`` extra (``pip install 'forklog[otlp]'``: opentelemetry-proto
and protobuf). Importing this module does not import them; building an
:class:`OTLPSink` does, and says what to install when they are missing.

The sink runs in the master only, in its own thread (a :class:`BufferedSink`):
a collector that stops answering fills this sink's bounded buffer, never the
files'. It is not the OpenTelemetry SDK's ``LoggingHandler``: the SDK's
``BatchLogRecordProcessor`` registers an ``os.register_at_fork`` hook that
starts an export thread in every forked worker, and its exporter reports its
own failures through ``opentelemetry.*`` loggers, which would come back into
the hub. Here the ``ExportLogsServiceRequest`` is built with
opentelemetry-proto and POSTed with :mod:`http.client`; nothing starts at a
fork, and this module never logs through :mod:`logging`.

Each record becomes one OTLP ``LogRecord``: :mod:`forklog._master.otlp_mapping`.
"""

from __future__ import annotations

import email.utils
import functools
import gzip
import http.client
import logging
import os
import ssl
import sys
import threading
import time
import urllib.parse
import weakref
from typing import (
    TYPE_CHECKING,
    Any,
    Dict,
    List,
    Mapping,
    NamedTuple,
    Optional,
    Tuple,
    Type,
)

from forklog import _fork
from forklog._master.buffered import BufferedSink, DeliveryError
from forklog._master.otlp_mapping import fill_attributes, fill_log_record, severity_number, utf8
from forklog._wire import safe_repr

if TYPE_CHECKING:
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
        ExportLogsServiceRequest,
        ExportLogsServiceResponse,
    )
    from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord as OTLPLogRecord
    from opentelemetry.proto.logs.v1.logs_pb2 import ResourceLogs

__all__ = ["OTLPSink", "severity_number"]

INSTALL_HINT = "pip install 'forklog[otlp]'"
#: Where an OpenTelemetry collector listens for OTLP/HTTP logs by default.
DEFAULT_ENDPOINT = "http://localhost:4318/v1/logs"
#: OTLP/HTTP: the statuses a client retries (the others mean the data was refused).
RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})


class _Proto(NamedTuple):
    request: Type[ExportLogsServiceRequest]
    response: Type[ExportLogsServiceResponse]
    resource_logs: Type[ResourceLogs]
    log_record: Type[OTLPLogRecord]


@functools.cache
def _proto() -> _Proto:
    """The message classes; an ``ImportError`` that says what to install without them."""
    try:
        # Imported here, not at the top: the otlp extra is optional (STYLE 12).
        from opentelemetry.proto.collector.logs.v1 import logs_service_pb2  # noqa: PLC0415
        from opentelemetry.proto.logs.v1 import logs_pb2  # noqa: PLC0415
    except ImportError as exc:
        raise ImportError(
            f"forklog.otlp.OTLPSink needs opentelemetry-proto and protobuf: {INSTALL_HINT} ({exc})"
        ) from exc
    return _Proto(
        logs_service_pb2.ExportLogsServiceRequest,
        logs_service_pb2.ExportLogsServiceResponse,
        logs_pb2.ResourceLogs,
        logs_pb2.LogRecord,
    )


class OTLPSink(BufferedSink):
    """Export records to an OpenTelemetry collector over OTLP/HTTP (protobuf).

    ``endpoint`` is the full URL of the logs endpoint; by default
    ``OTEL_EXPORTER_OTLP_LOGS_ENDPOINT``, else ``OTEL_EXPORTER_OTLP_ENDPOINT``
    followed by ``/v1/logs``, else ``http://localhost:4318/v1/logs``.
    ``headers`` (default: ``OTEL_EXPORTER_OTLP_LOGS_HEADERS`` or
    ``OTEL_EXPORTER_OTLP_HEADERS``, ``key=value,...``) go with every
    request, an API key say. The resource is ``resource_attributes`` over
    ``OTEL_RESOURCE_ATTRIBUTES``, with ``service.name`` from
    ``service_name``, else ``OTEL_SERVICE_NAME``, else
    ``unknown_service:<program>``.

    Records are sent in batches of at most ``batch_size`` records and
    ``max_request_bytes`` (before compression): whatever waits in the buffer
    when the previous request is done goes in the next one, so a busy hub
    sends few large requests and a quiet one sends each record at once.
    ``compression`` is ``"gzip"`` or ``None``. A connection error, a timeout
    (``timeout`` seconds) and HTTP 429, 502, 503 and 504 are retried after a
    backoff of up to ``max_backoff`` seconds, or the server's
    ``Retry-After`` (at most ``max_retry_after``); meanwhile records wait in
    a buffer of ``capacity``, and what does not fit is dropped and counted.
    Any other answer means the collector refused the batch: it is dropped,
    counted in ``stats().dropped_by_sink`` and reported.
    """

    def __init__(
        self,
        endpoint: Optional[str] = None,
        *,
        service_name: Optional[str] = None,
        resource_attributes: Optional[Mapping[str, object]] = None,
        headers: Optional[Mapping[str, str]] = None,
        compression: Optional[str] = "gzip",
        timeout: float = 10.0,
        level: int = logging.NOTSET,
        capacity: int = 10_000,
        batch_size: int = 512,
        max_request_bytes: int = 4 << 20,
        max_retry_after: float = 30.0,
        close_timeout: float = 5.0,
        max_backoff: float = 5.0,
    ) -> None:
        proto = self._proto = _proto()
        super().__init__(
            level,
            capacity=capacity,
            batch_size=batch_size,
            close_timeout=close_timeout,
            max_backoff=max_backoff,
        )
        url = endpoint if endpoint is not None else _endpoint_from_env()
        parts = urllib.parse.urlsplit(url)
        try:
            port = parts.port
        except ValueError:
            port = -1
        if parts.scheme not in ("http", "https") or not parts.hostname or port == -1:
            raise ValueError(
                f"forklog.otlp.OTLPSink: endpoint={url!r}: expected http(s)://host[:port]/path, "
                f"as in {DEFAULT_ENDPOINT!r}"
            )
        if compression not in ("gzip", None):
            raise ValueError(f"forklog.otlp.OTLPSink: compression={compression!r}: expected 'gzip' or None")
        if timeout <= 0:
            raise ValueError(f"forklog.otlp.OTLPSink: timeout={timeout!r}: expected seconds > 0")
        if batch_size < 1:
            raise ValueError(f"forklog.otlp.OTLPSink: batch_size={batch_size!r}: expected a positive integer")
        self.endpoint = url
        self.compression = compression
        self.timeout = timeout
        self.max_request_bytes = max_request_bytes
        self.max_retry_after = max_retry_after
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = port
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._headers = {
            **(
                _pairs_from_env("OTEL_EXPORTER_OTLP_LOGS_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS")
                if headers is None
                else headers
            ),
            "Content-Type": "application/x-protobuf",
            "User-Agent": f"forklog/{_version()}",
        }
        if compression == "gzip":
            self._headers["Content-Encoding"] = "gzip"
        self.resource_attributes = _resource(service_name, resource_attributes)
        template = proto.resource_logs()
        fill_attributes(template.resource.attributes.add, self.resource_attributes.items())
        self._resource_logs = template
        self._conn: Optional[http.client.HTTPConnection] = None
        self._not_before = 0.0  # a Retry-After's end, in time.monotonic()
        self._wake = threading.Event()  # set by close(): stop waiting for a Retry-After
        #: Records the collector refused (HTTP 4xx, or rejected in a partial success).
        self.rejected = 0
        self.set_name("otlp")
        _live_sinks.add(self)
        _install_fork_hook()

    # -- the records -----------------------------------------------------------

    def encode(self, records: List[logging.LogRecord]) -> List[Tuple[bytes, int]]:
        """The request bodies (uncompressed) for ``records``, each with the index after its last record.

        Records the sink's filters reject are left out. A request holds
        records up to ``max_request_bytes``; a bigger record goes alone.
        """
        observed = time.time_ns()
        requests: List[Tuple[bytes, int]] = []
        request = None
        scope_logs: Any = None
        scope_name: object = None
        size = 0
        for index, record in enumerate(records):  # filtered once, when the batch was taken
            if request is None:
                request = self._new_request()
            if scope_logs is None or record.name != scope_name:
                # A new scope at each change of logger keeps the records in order.
                scope_logs = self._new_scope(request, record.name)
                scope_name = record.name
            # Filled in place: building it apart, then appending, copies it.
            log_record = scope_logs.log_records.add()
            fill_log_record(log_record, record, observed)
            record_size = log_record.ByteSize()
            if size and size + record_size > self.max_request_bytes:
                del scope_logs.log_records[-1]
                if not scope_logs.log_records:  # the scope was opened for this record
                    del request.resource_logs[0].scope_logs[-1]
                requests.append((request.SerializeToString(), index))
                request = self._new_request()
                scope_logs = self._new_scope(request, record.name)
                fill_log_record(scope_logs.log_records.add(), record, observed)
                size = 0
            size += record_size
        if request is not None:
            requests.append((request.SerializeToString(), len(records)))
        return requests

    def _new_request(self) -> ExportLogsServiceRequest:
        request = self._proto.request()
        request.resource_logs.add().CopyFrom(self._resource_logs)
        return request

    @staticmethod
    def _new_scope(request: ExportLogsServiceRequest, name: object) -> Any:
        scope_logs = request.resource_logs[0].scope_logs.add()
        scope_logs.scope.name = utf8(name if type(name) is str else safe_repr(name))
        return scope_logs

    def log_record(self, record: logging.LogRecord, observed: int = 0) -> OTLPLogRecord:
        """``record`` as an OTLP ``LogRecord`` (``observed``: the export time, by default now)."""
        log_record = self._proto.log_record()
        fill_log_record(log_record, record, observed or time.time_ns())
        return log_record

    # -- the sink's thread -----------------------------------------------------

    def deliver(self, records: List[logging.LogRecord]) -> None:
        wait = self._not_before - time.monotonic()
        if wait > 0 and not self.closed:
            self._wake.wait(wait)  # the collector's Retry-After (BufferedSink's backoff is shorter)
        done = 0
        for body, end in self.encode(records):
            self._post(body, records, done, end)
            done = end

    def _post(self, body: bytes, records: List[logging.LogRecord], start: int, end: int) -> None:
        data = gzip.compress(body, 6, mtime=0) if self.compression == "gzip" else body
        timeout = min(self.timeout, self.close_timeout) if self.closed else self.timeout
        reused = self._conn is not None
        try:
            try:
                status, reason, retry_after, answer = self._request(data, timeout)
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                if not reused:
                    raise
                # The collector closed our idle keep-alive connection: it did
                # not see this request, which goes again on a new connection.
                self.disconnect()
                status, reason, retry_after, answer = self._request(data, timeout)
        except (OSError, http.client.HTTPException) as exc:
            raise DeliveryError(f"otlp {self.endpoint}: {exc!r}", start) from exc
        if 200 <= status < 300:
            self._partial_success(answer, records[start:end])
            return
        detail = answer[:200].decode("utf-8", "replace")
        if status in RETRYABLE_STATUSES:
            delay = _retry_after(retry_after)
            if delay is not None:
                self._not_before = time.monotonic() + min(delay, self.max_retry_after)
            raise DeliveryError(f"otlp {self.endpoint}: HTTP {status} {reason}: {detail}", start)
        batch = records[start:end]
        self._refused(batch, f"HTTP {status} {reason}: {detail}", len(batch))

    def _request(self, data: bytes, timeout: float) -> Tuple[int, str, Optional[str], bytes]:
        conn = self._conn
        if conn is None:
            if self._https:
                conn = http.client.HTTPSConnection(
                    self._host, self._port, timeout=timeout, context=ssl.create_default_context()
                )
            else:
                conn = http.client.HTTPConnection(self._host, self._port, timeout=timeout)
            self._conn = conn
        elif conn.sock is not None:
            conn.sock.settimeout(timeout)
        conn.request("POST", self._path, body=data, headers=self._headers)
        response = conn.getresponse()
        answer = response.read()
        if response.will_close:
            self.disconnect()
        return response.status, response.reason, response.getheader("Retry-After"), answer

    def _partial_success(self, answer: bytes, batch: List[logging.LogRecord]) -> None:
        if not answer:
            return
        try:
            response = self._proto.response.FromString(answer)
        except Exception:  # noqa: BLE001 - a collector's odd success answer costs nothing
            return
        rejected = response.partial_success.rejected_log_records
        if rejected > 0:
            message = response.partial_success.error_message
            self._refused(batch, f"{rejected} records rejected: {message}", min(rejected, len(batch)))

    def _refused(self, batch: List[logging.LogRecord], why: str, count: int) -> None:
        """The collector refused ``count`` records of ``batch``: count them, report once."""
        self.rejected += count
        with self._cond:
            if count == len(batch):
                for record in batch:
                    self._count_drop(record)
            else:  # which ones the collector does not say: counted on the sink's own counter
                # (``drops`` is a merged copy: an update there would be lost)
                self._drops[("UNKNOWN", 0)] += count
        try:
            raise OTLPRefused(f"otlp {self.endpoint}: {why}; {count} records dropped")
        except OTLPRefused:
            if batch:
                self.handleError(batch[0])

    def disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def close(self) -> None:
        self._wake.set()  # a Retry-After no longer holds back the last delivery
        super().close()

    @property
    def destination(self) -> str:
        """Where the records go: the endpoint's URL."""
        return str(self.endpoint)

    def __repr__(self) -> str:
        return f"<OTLPSink {self.endpoint} ({logging.getLevelName(self.level)})>"


class OTLPRefused(Exception):
    """The collector refused records (reported through ``handleError``, never raised to the app)."""


# -- configuration ---------------------------------------------------------------


def _endpoint_from_env() -> str:
    logs = os.environ.get("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "").strip()
    if logs:
        return logs
    base = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    if base:
        return base.rstrip("/") + "/v1/logs"
    return DEFAULT_ENDPOINT


def _pairs_from_env(*names: str) -> Dict[str, str]:
    """``key=value,key2=value2`` (values URL-encoded) from the first of ``names`` that is set."""
    for name in names:
        raw = os.environ.get(name, "").strip()
        if raw:
            pairs = {}
            for item in raw.split(","):
                key, sep, value = item.partition("=")
                if sep and key.strip():
                    pairs[urllib.parse.unquote(key.strip())] = urllib.parse.unquote(value.strip())
            return pairs
    return {}


def _resource(service_name: Optional[str], attributes: Optional[Mapping[str, object]]) -> Dict[str, object]:
    """The resource's attributes: the arguments over the environment, then defaults."""
    merged: Dict[str, object] = dict(_pairs_from_env("OTEL_RESOURCE_ATTRIBUTES"))
    env_service = os.environ.get("OTEL_SERVICE_NAME", "").strip()
    if env_service:
        merged["service.name"] = env_service
    merged.update(attributes or {})
    if service_name:
        merged["service.name"] = service_name
    program = os.path.basename(sys.argv[0] if sys.argv and sys.argv[0] else sys.executable) or "python"
    merged.setdefault("service.name", f"unknown_service:{program}")
    merged.setdefault("telemetry.sdk.name", "forklog")
    merged.setdefault("telemetry.sdk.language", "python")
    merged.setdefault("telemetry.sdk.version", _version())
    return merged


def _retry_after(value: Optional[str]) -> Optional[float]:
    """A ``Retry-After`` header's delay in seconds (a number or an HTTP date), None if unusable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _version() -> str:
    from forklog import __version__  # noqa: PLC0415 - forklog/__init__ is loaded by now

    return __version__


# -- fork --------------------------------------------------------------------------

#: The sinks of this process, for the fork hook (weak: a closed sink goes away).
_live_sinks: weakref.WeakSet[OTLPSink] = weakref.WeakSet()


def _close_in_child() -> None:
    # A forked worker must not keep the master's keep-alive connection open:
    # the collector would not see the master close it. Closing the child's
    # copy of the descriptor leaves the master's connection as it is.
    for sink in list(_live_sinks):
        conn, sink._conn = sink._conn, None
        sock = conn.sock if conn is not None else None
        if sock is not None:
            # Not sock.close(): while a response is being read (the fork came
            # mid-request) its file object keeps the descriptor open.
            os.close(sock.detach())


def _install_fork_hook() -> None:
    # On the first sink, not at import.
    _fork.on_fork(after_in_child=_close_in_child)
