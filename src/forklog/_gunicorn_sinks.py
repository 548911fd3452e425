"""gunicorn's own ``errorlog`` and ``accesslog`` as sinks of the master's hub (see forklog.gunicorn)."""

from __future__ import annotations

import logging
import sys
from typing import Any, List

from gunicorn import glogging

from forklog._master.hub import Sink
from forklog._master.sinks import RotatingFileSink

__all__ = ["STANDARD_STREAMS", "gunicorn_sinks"]

#: gunicorn's errorlog/accesslog paths that name the master's own stdout or stderr (containers).
STANDARD_STREAMS = {
    "/dev/stdout": "stdout",
    "/dev/stderr": "stderr",
    "/dev/fd/1": "stdout",
    "/dev/fd/2": "stderr",
}


def gunicorn_sinks(cfg: Any, *, create: bool = True) -> List[Sink]:
    """gunicorn's own ``errorlog`` and ``accesslog`` files, as sinks of the hub.

    Each gets only its logger's records, in gunicorn's own line format. "-"
    (stderr, stdout) is left to the console sink. ``create=False`` opens no
    file (``python -m forklog check`` only looks at them).
    """
    sinks: List[Sink] = []
    if cfg is None:
        return sinks
    wanted = (
        ("errorlog", cfg.errorlog, "gunicorn.error", glogging.Logger.error_fmt, glogging.Logger.datefmt),
        ("accesslog", cfg.accesslog, "gunicorn.access", glogging.Logger.access_fmt, None),
    )
    for name, path, logger, fmt, datefmt in wanted:
        if path and path != "-":
            sink: logging.Handler
            if path in STANDARD_STREAMS:
                # A link to the master's own descriptor (/proc/self/fd/1), which
                # a file sink never follows: the stream itself, as gunicorn writes it.
                sink = logging.StreamHandler(getattr(sys, STANDARD_STREAMS[path]))
            else:
                sink = RotatingFileSink(
                    path, maxBytes=0, encoding="utf-8", delay=not create, errors="backslashreplace"
                )
            sink.setLevel(logging.DEBUG)
            sink.setFormatter(logging.Formatter(fmt, datefmt))
            sink.addFilter(_ErrorLog(logger) if name == "errorlog" else logging.Filter(logger))
            sinks.append((name, sink))
    return sinks


class _ErrorLog(logging.Filter):
    """gunicorn's error log takes forklog's own reports too (drops, losses): they go where its errors go."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name == "forklog" or super().filter(record)
