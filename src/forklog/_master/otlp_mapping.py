"""How :class:`forklog.otlp.OTLPSink` turns a record into an OTLP ``LogRecord``.

Runs in the master, in the sink's thread. Works on the protobuf messages the
sink passes in; imports no protobuf itself (the ``otlp`` extra is optional).

Each record becomes one OTLP ``LogRecord``:

* ``time_unix_nano``: when the worker created it; ``observed_time_unix_nano``:
  when this sink exported it;
* ``severity_number`` from the level (DEBUG 5, INFO 9, WARNING 13, ERROR 17,
  CRITICAL 21, levels in between on the steps between), ``severity_text``
  the level's name;
* ``body``: the message merged with its args, as a string;
* the logger's name as the instrumentation scope's name;
* ``trace_id``, ``span_id`` and ``flags`` from ``otelTraceID``,
  ``otelSpanID`` and ``otelTraceSampled``, which the worker adds to a record
  logged inside a span (:mod:`forklog._worker.context`);
* attributes: ``code.file.path``, ``code.function.name``,
  ``code.line.number``, ``process.pid`` (the worker's), ``thread.id``,
  ``thread.name``; ``exception.type``, ``exception.message`` and
  ``exception.stacktrace`` for a record with a traceback; ``code.stacktrace``
  for one with ``stack_info``; then the extras and bound fields, strings,
  booleans, integers, floats, lists and dicts as the matching ``AnyValue``,
  anything else as its ``repr()``.

An odd record never stops the sink: text that is not UTF-8 (a lone
surrogate, which the wire carries) is sent with backslash escapes, and a
record whose fields cannot be read becomes one that says why.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable, Iterable, List, Mapping, Tuple

from forklog._wire import EXC_MESSAGE_ATTR, EXC_TYPE_ATTR, STANDARD_ATTRS, merged_message, safe_repr, safe_str

if TYPE_CHECKING:
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue
    from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord as OTLPLogRecord

__all__ = ["OWN_ATTRS", "TRACE_ATTRS", "fill_attributes", "fill_log_record", "severity_number", "utf8"]

#: The record attributes the worker sets inside a span, as
#: opentelemetry-instrumentation-logging names them (with its service name).
TRACE_ATTRS = frozenset({"otelTraceID", "otelSpanID", "otelTraceSampled", "otelServiceName"})
#: The attribute names the sink sets itself; an extra of the same name becomes ``extra.<name>``.
OWN_ATTRS = frozenset(
    {
        "code.file.path",
        "code.function.name",
        "code.line.number",
        "code.stacktrace",
        "process.pid",
        "thread.id",
        "thread.name",
        "exception.type",
        "exception.message",
        "exception.stacktrace",
    }
)
_SKIPPED = STANDARD_ATTRS | TRACE_ATTRS
#: Nesting kept for lists and dicts inside an extra; deeper ones become their repr.
_MAX_DEPTH = 8
_INT64 = (-(1 << 63), (1 << 63) - 1)
_NO_TRACE = frozenset({None, "", "0", "0" * 32, "0" * 16})
_exception_formatter = logging.Formatter()


def severity_number(levelno: int) -> int:
    """The OTLP ``SeverityNumber`` of a ``logging`` level.

    DEBUG is 5, INFO 9, WARNING 13, ERROR 17 and CRITICAL 21 (``FATAL``);
    each level above one of them takes the next of its band's four steps
    (INFO+1 is ``INFO2``, INFO+3 to INFO+9 ``INFO4``). Below DEBUG is
    ``TRACE`` (1), NOTSET ``UNSPECIFIED`` (0), above CRITICAL ``FATAL4``.
    """
    if levelno <= 0:
        return 0
    if levelno < logging.DEBUG:
        return 1
    return min(24, 1 + 4 * (levelno // 10) + min(3, levelno % 10))


def _same(text: str) -> str:
    return text


def utf8(text: str) -> str:
    """``text`` as valid UTF-8: a lone surrogate becomes a ``\\udcff`` escape."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def fill_log_record(out: OTLPLogRecord, record: logging.LogRecord, observed: int) -> None:
    """Fill ``out`` from ``record``; one that cannot be mapped becomes a record that says why.

    ``observed`` is the export time (``observed_time_unix_nano``).
    """
    try:
        _fill_log_record(out, record, observed, _same)
    except ValueError:  # a lone surrogate (allowed on the wire) is not UTF-8
        out.Clear()
        try:
            _fill_log_record(out, record, observed, utf8)
        except Exception as exc:  # noqa: BLE001 - one odd record never wedges the sink
            _fallback(out, record, observed, exc)
    except Exception as exc:  # noqa: BLE001
        _fallback(out, record, observed, exc)


def _fill_log_record(
    out: OTLPLogRecord, record: logging.LogRecord, observed: int, text: Callable[[str], str]
) -> None:
    attrs = record.__dict__
    out.time_unix_nano = int(record.created * 1e9)
    out.observed_time_unix_nano = observed
    out.severity_number = severity_number(int(record.levelno))  # type: ignore[assignment]
    out.severity_text = text(str(record.levelname))
    out.body.string_value = text(merged_message(record))
    own: List[Tuple[str, object]] = [
        ("code.file.path", record.pathname),
        ("code.function.name", record.funcName),
        ("code.line.number", record.lineno),
        ("process.pid", record.process),
        ("thread.id", record.thread),
        ("thread.name", record.threadName),
    ]
    if not _fill_trace(out, attrs):  # kept as they came, not lost
        own.extend((key, attrs.get(key)) for key in ("otelTraceID", "otelSpanID", "otelTraceSampled"))
    exc_type = attrs.get(EXC_TYPE_ATTR)
    exc_message = attrs.get(EXC_MESSAGE_ATTR)
    stacktrace = record.exc_text
    exc_info = record.exc_info
    if exc_info and exc_info[0] is not None:  # a record made in the master, not decoded
        if exc_type is None:
            kind = exc_info[0]
            exc_type = (
                kind.__qualname__
                if kind.__module__ == "builtins"
                else f"{kind.__module__}.{kind.__qualname__}"
            )
            exc_message = safe_str(exc_info[1])
        stacktrace = stacktrace or _exception_formatter.formatException(exc_info)
    if exc_type is not None:
        own.append(("exception.type", exc_type))
        own.append(("exception.message", exc_message))
    if stacktrace:
        own.append(("exception.stacktrace", stacktrace))
    if record.stack_info:
        own.append(("code.stacktrace", record.stack_info))
    add = out.attributes.add
    fill_attributes(add, own, text)
    extra = attrs.keys() - _SKIPPED  # in C: most records have no extras
    if extra:
        fill_attributes(
            add,
            [
                (f"extra.{key}" if key in OWN_ATTRS else key, value)
                for key, value in attrs.items()
                if key in extra
            ],
            text,
        )


def _fill_trace(out: OTLPLogRecord, attrs: Mapping[str, object]) -> bool:
    """Set the trace context from the record's ``otel*`` fields; False if they are malformed."""
    trace_id = attrs.get("otelTraceID")
    span_id = attrs.get("otelSpanID")
    if trace_id is None:
        return True
    if type(trace_id) is not str or not (span_id is None or type(span_id) is str):
        return False
    if trace_id in _NO_TRACE:
        return True  # no span (opentelemetry-instrumentation-logging writes "0")
    try:
        trace_bytes = bytes.fromhex(trace_id)
        span_bytes = b"" if span_id in _NO_TRACE else bytes.fromhex(span_id)  # type: ignore[arg-type]
    except ValueError:
        return False
    if len(trace_bytes) != 16 or len(span_bytes) not in (0, 8):
        return False
    out.trace_id = trace_bytes
    out.span_id = span_bytes
    out.flags = 1 if attrs.get("otelTraceSampled") is True else 0  # W3C trace flags: sampled
    return True


def fill_attributes(
    add: Any, items: Iterable[Tuple[str, object]], text: Callable[[str], str] = _same
) -> None:
    """Add ``items`` with ``add``, a repeated ``KeyValue`` field's (protobuf has no type stubs)."""
    for key, value in items:
        kind = type(value)
        if value is None:
            continue  # no value: no attribute (OTLP attribute values are never null)
        pair = add()
        pair.key = text(key if type(key) is str else safe_repr(key))
        # Strings and integers inline: nearly every attribute is one.
        if kind is str:
            pair.value.string_value = text(value)  # type: ignore[arg-type]
        elif kind is int and _INT64[0] <= value <= _INT64[1]:  # type: ignore[operator]
            pair.value.int_value = value
        else:
            _fill_value(pair.value, value, text, 0)


def _fill_value(out: AnyValue, value: object, text: Callable[[str], str], depth: int) -> None:
    kind = type(value)
    if kind is str:
        out.string_value = text(value)  # type: ignore[arg-type]
    elif kind is bool:
        out.bool_value = value  # type: ignore[assignment]
    elif kind is int and _INT64[0] <= value <= _INT64[1]:  # type: ignore[operator]
        out.int_value = value  # type: ignore[assignment]
    elif kind is float:
        out.double_value = value  # type: ignore[assignment]
    elif kind is bytes:
        out.bytes_value = value  # type: ignore[assignment]
    elif (kind is list or kind is tuple) and depth < _MAX_DEPTH:
        values = out.array_value.values
        out.array_value.SetInParent()  # an empty list is still a list
        for item in value:  # type: ignore[attr-defined]
            _fill_value(values.add(), item, text, depth + 1)
    elif kind is dict and depth < _MAX_DEPTH:
        out.kvlist_value.SetInParent()
        fill_attributes(out.kvlist_value.values.add, value.items(), text)  # type: ignore[attr-defined]
    elif value is not None:
        out.string_value = text(safe_repr(value))


def _fallback(out: OTLPLogRecord, record: logging.LogRecord, observed: int, exc: Exception) -> None:
    """A record that could not be mapped: its time, level and logger, and what went wrong."""
    out.Clear()
    try:
        out.time_unix_nano = int(float(record.created) * 1e9)
        out.severity_number = severity_number(int(record.levelno))  # type: ignore[assignment]
    except Exception:  # noqa: BLE001
        out.severity_number = 17  # type: ignore[assignment]  # ERROR: something is wrong
    out.observed_time_unix_nano = observed
    out.body.string_value = utf8(f"forklog: could not encode a record for OTLP: {safe_repr(exc)}")
