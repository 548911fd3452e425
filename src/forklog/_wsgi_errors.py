"""gunicorn's ``wsgi.errors``: what an app writes there reaches gunicorn's error log, once (issue 22, item 5).

gunicorn builds ``environ["wsgi.errors"]`` from the ``stream`` of each
handler of ``gunicorn.error`` (stderr first when ``errorlog`` is "-"). Under
forklog those handlers hold no stream: the hub's handler (no logging
config) or an adopted file handler (a logging config's). So the hub's
handler gets an :class:`ErrorsStream` onto the ``errorlog`` sink
(:func:`serve`), and gunicorn's wrapper is given one for each adopted file
handler (:func:`wrap`). The text travels as it is, and the master appends
it, the one writer of that file.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any, Optional, Union

from forklog._master.hub import Hub
from forklog._master.sinks import RotatingFileSink
from forklog._wire import adopted_lines
from forklog._worker import adoption

__all__ = ["ErrorsStream", "serve", "wrap"]


class ErrorsStream:
    """The ``stream`` of the hub's handler on ``gunicorn.error``: ``wsgi.errors``' way to the error log.

    gunicorn's ``WSGIErrorsWrapper`` writes an app's text to the ``stream``
    of each handler of ``gunicorn.error``. The hub's handler has this one
    when ``errorlog`` is a file: the text goes as it is to the master, whose
    error log sink appends it (``Targets.serve``), once, in order with the
    worker's other lines.
    """

    def __init__(self, channel: Any, spec: bytes) -> None:
        self._channel = channel
        self._spec = spec

    def write(self, data: Union[str, bytes]) -> int:
        text = data.decode("utf-8", "backslashreplace") if isinstance(data, bytes) else str(data)
        if text:
            record = logging.LogRecord("wsgi.errors", logging.ERROR, "", 0, text, None, None)
            sent = self._channel.send_text(self._spec, record, text, "")
            if not sent and self._channel.hub_gone:  # the hub has stopped: stderr, not nowhere
                with contextlib.suppress(Exception):
                    os.write(2, text.encode("utf-8", "backslashreplace"))
        return len(data)

    def flush(self) -> None:
        """Each write is sent whole; nothing waits here."""


def serve(hub_: Hub, handler: Optional[logging.Handler]) -> None:
    """``wsgi.errors`` reaches the error log file once: the hub's handler gets a stream onto its sink.

    gunicorn writes ``environ["wsgi.errors"]`` to the ``stream`` of each
    handler of ``gunicorn.error`` (stderr first when ``errorlog`` is "-");
    the hub's handler has none, so with an ``errorlog`` file every write
    was lost.
    """
    sink = dict(hub_.sinks).get("errorlog")
    if handler is not None and type(sink) is logging.StreamHandler:
        # errorlog "/dev/stdout": the master's own stream, which a worker shares, as gunicorn writes it.
        handler.stream = sink.stream  # type: ignore[attr-defined]
        return
    if handler is None or not isinstance(sink, RotatingFileSink):
        return
    spec = adopted_lines.spec_of(sink)
    if spec is None:
        return
    data = spec.to_bytes()
    hub_.targets.serve(data, "errorlog", sink)
    handler.stream = ErrorsStream(hub_.queue, data)  # type: ignore[attr-defined]


def wrap() -> None:
    """``wsgi.errors`` when a logging config gives ``gunicorn.error`` its handlers: to each adopted file.

    gunicorn builds ``environ["wsgi.errors"]`` from the ``stream`` of each
    handler of ``gunicorn.error``; an adopted file handler holds none (the
    master writes its file), and gunicorn would call ``None.write``. The
    wrapper writes to that handler's target through the hub instead.
    """
    from gunicorn.http import wsgi  # noqa: PLC0415 - gunicorn's, loaded once it serves

    original = wsgi.WSGIErrorsWrapper.__init__
    if getattr(original, "forklog", False):
        return

    def init(self: Any, cfg: Any) -> None:
        original(self, cfg)
        # gunicorn's own choice of handlers (stderr first for errorlog "-"), each adopted one's target.
        handlers = logging.getLogger("gunicorn.error").handlers
        handlers = handlers[1:] if cfg.errorlog == "-" else handlers
        channel = adoption.attached()
        for handler in handlers:
            target = handler.__dict__.get("_forklog_target")
            if channel is not None and isinstance(target, bytes) and isinstance(handler, logging.FileHandler):
                self.streams[self.streams.index(None)] = ErrorsStream(channel, target)
        self.streams = [stream for stream in self.streams if stream is not None]

    init.forklog = True  # type: ignore[attr-defined]
    wsgi.WSGIErrorsWrapper.__init__ = init
