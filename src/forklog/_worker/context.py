"""Context fields: bound once, carried by every record logged in that context.

``forklog.bind(request_id="r-42")`` stores fields in a :mod:`contextvars`
variable, so they follow the code that bound them: the thread of a gthread
worker handling one request, one asyncio task (tasks copy the context they
are created in), never a neighbour. When a record is emitted (in the worker,
before it crosses to the master) the fields become extras on it, so the
JSON file, syslog's structured data and OTLP attributes all show them.

The OpenTelemetry span active at emit time is captured the same way, as
``otelTraceID``, ``otelSpanID`` and ``otelTraceSampled`` (the names
``opentelemetry-instrumentation-logging`` uses), when the application has
imported ``opentelemetry.trace``; forklog never imports it itself.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import sys
from typing import Any, Dict, Iterator, Mapping

__all__ = ["ContextFilter", "apply", "bind", "bound", "bound_fields", "unbind"]

_EMPTY: Mapping[str, object] = {}
_fields: contextvars.ContextVar[Mapping[str, object]] = contextvars.ContextVar(
    "forklog_fields", default=_EMPTY
)

#: Attributes of every LogRecord: a bound field never replaces one of them.
_RESERVED = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


def bind(**fields: object) -> contextvars.Token[Mapping[str, object]]:
    """Add ``fields`` to every record logged from this context from now on.

    Undo with :func:`unbind`, or use :func:`bound` (a context manager). A
    name that is a ``LogRecord`` attribute (``name``, ``msg``, ...) is
    refused at once with a ``ValueError``.
    """
    bad = sorted(name for name in fields if name in _RESERVED)
    if bad:
        raise ValueError(
            f"forklog.bind(): {', '.join(bad)} would replace a LogRecord attribute; choose other names"
        )
    merged = dict(_fields.get())
    merged.update(fields)
    return _fields.set(merged)


def unbind(*names: str) -> None:
    """Stop adding ``names`` to records from this context (missing names are ignored)."""
    current = _fields.get()
    if any(name in current for name in names):
        _fields.set({k: v for k, v in current.items() if k not in names})


@contextlib.contextmanager
def bound(**fields: object) -> Iterator[None]:
    """``with forklog.bound(request_id=rid): ...``: the fields hold inside the block only."""
    token = bind(**fields)
    try:
        yield
    finally:
        _fields.reset(token)


def bound_fields() -> Dict[str, object]:
    """The fields bound in this context."""
    return dict(_fields.get())


def apply(record: logging.LogRecord) -> None:
    """Add the bound fields and the active span's ids to ``record``.

    A field the log call passed itself (``extra=``) wins over a bound one.
    Cheap when nothing is bound and OpenTelemetry is not in use: one
    context-variable read and one dictionary lookup.
    """
    fields = _fields.get()
    if fields:
        attrs = record.__dict__
        for name, value in fields.items():
            if name not in attrs:
                attrs[name] = value
    trace = sys.modules.get("opentelemetry.trace")
    if trace is not None:
        _apply_span(record, trace)


def _apply_span(record: logging.LogRecord, trace: Any) -> None:
    try:
        context = trace.get_current_span().get_span_context()
        if not context.is_valid:
            return
        attrs = record.__dict__
        attrs.setdefault("otelTraceID", format(context.trace_id, "032x"))
        attrs.setdefault("otelSpanID", format(context.span_id, "016x"))
        attrs.setdefault("otelTraceSampled", bool(context.trace_flags.sampled))
    except Exception:  # noqa: BLE001 - a broken tracer never costs the record
        pass


class ContextFilter(logging.Filter):
    """The same capture for any handler: ``handler.addFilter(forklog.ContextFilter())``.

    For a stock ``logging.handlers.QueueHandler`` on the hub's queue, or any
    handler outside forklog. ``ForkHandler`` does this itself.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        apply(record)
        return True
