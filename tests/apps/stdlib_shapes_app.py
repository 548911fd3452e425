"""A WSGI app whose logging is one of the shapes real projects use, picked by ``SHAPE`` at import.

For issue 22: the same app under plain gunicorn (the stdlib's behaviour, the
reference) and under forklog must put the same lines in the same places.
``/log?id=R&n=N`` logs N DEBUG, N INFO and N WARNING records of logger
``shape.app``, each naming the request; ``/errors?id=R&n=N`` writes N lines
to ``wsgi.errors``.

* ``basicconfig``: ``logging.basicConfig(level=INFO, format=...)`` at import,
  the most common line of a small app (stderr);
* ``root-by-hand``: a ``FileHandler`` added to root and root's level INFO;
* ``queue-listener``: the app's own ``QueueHandler`` on root and a
  ``QueueListener`` writing ``SHAPE_FILE``, started at import;
* ``retarget``: a ``FileHandler`` on ``shape.app`` pointed at another file
  at import (``baseFilename`` changed, then ``close()``: the stdlib opens
  the new name on the next record);
* ``set-stream``: a ``StreamHandler`` on ``shape.app`` made for stderr,
  then ``setStream(sys.stdout)`` at import: the lines go to stdout;
* ``retarget-in-worker``: ``retarget``'s handler made at import, pointed at
  ``SHAPE_FILE`` by each worker at its first request (the handler the
  master adopted under ``--preload`` moves in a worker of another user);
* ``structlog``: structlog's stdlib recipe (``filter_by_level``,
  ``ProcessorFormatter`` on a root ``StreamHandler``, root at INFO);
* ``twice-file-first`` / ``twice-rotating-first``: a ``FileHandler`` and a
  ``RotatingFileHandler(maxBytes=20000, backupCount=20)`` on one file, in
  either order, on ``shape.app``;
* ``cookbook-gzip``: the logging cookbook's ``namer``/``rotator`` on a
  ``RotatingFileHandler(maxBytes=4000, backupCount=30)``: gzipped backups;
* ``named-only``: a handler on another logger only (as Django's defaults):
  ``shape.app``'s records find none, and go to the stdlib's ``lastResort``;
* ``timed-bak``: a ``TimedRotatingFileHandler`` rotating every second, its
  backups named by its own ``suffix`` (``*.bak``) and ``extMatch``;
* ``nothing``: no logging configured at all.
"""

from __future__ import annotations

import atexit
import gzip
import logging
import logging.handlers
import os
import queue
import re
import shutil
import sys
from typing import Any, Callable, Dict, Iterable, List, MutableMapping, Tuple
from urllib.parse import parse_qs

SHAPE = os.environ.get("SHAPE", "nothing")
FILE = os.environ.get("SHAPE_FILE", "")
FORMAT = "SHAPE %(levelname)s %(name)s %(message)s"

if SHAPE == "basicconfig":
    logging.basicConfig(level=logging.INFO, format=FORMAT)
elif SHAPE == "root-by-hand":
    _handler = logging.FileHandler(FILE)
    _handler.setFormatter(logging.Formatter(FORMAT))
    logging.getLogger().addHandler(_handler)
    logging.getLogger().setLevel(logging.INFO)
elif SHAPE == "queue-listener":
    _queue: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    _file = logging.FileHandler(FILE)
    _file.setFormatter(logging.Formatter(FORMAT))
    _listener = logging.handlers.QueueListener(_queue, _file)
    _listener.start()
    atexit.register(_listener.stop)
    logging.getLogger().addHandler(logging.handlers.QueueHandler(_queue))
    logging.getLogger().setLevel(logging.INFO)

elif SHAPE in ("retarget", "retarget-in-worker"):
    _first = logging.FileHandler(FILE + ".first")
    _first.setFormatter(logging.Formatter(FORMAT))
    logging.getLogger("shape.app").addHandler(_first)
    logging.getLogger("shape.app").setLevel(logging.INFO)
    if SHAPE == "retarget":
        _first.baseFilename = FILE
        _first.close()
elif SHAPE == "set-stream":
    _stream = logging.StreamHandler(sys.stderr)
    _stream.setFormatter(logging.Formatter(FORMAT))
    logging.getLogger("shape.app").addHandler(_stream)
    logging.getLogger("shape.app").setLevel(logging.INFO)
    _stream.setStream(sys.stdout)
elif SHAPE == "structlog":
    import structlog

    def _render(_logger: object, _name: str, event: MutableMapping[str, Any]) -> str:
        return f"SHAPE {event['level'].upper()} {event['logger']} {event['event']}"

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            structlog.stdlib.add_logger_name,
            structlog.stdlib.add_log_level,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    _console = logging.StreamHandler()
    _console.setFormatter(structlog.stdlib.ProcessorFormatter(processor=_render))
    logging.getLogger().addHandler(_console)
    logging.getLogger().setLevel(logging.INFO)
elif SHAPE.startswith("twice-"):
    _plain = logging.FileHandler(FILE)
    _rotating = logging.handlers.RotatingFileHandler(FILE, maxBytes=20000, backupCount=20)
    _pair = [_plain, _rotating] if SHAPE == "twice-file-first" else [_rotating, _plain]
    for _each in _pair:
        _each.setFormatter(logging.Formatter(FORMAT))
        logging.getLogger("shape.app").addHandler(_each)
    logging.getLogger("shape.app").setLevel(logging.INFO)
elif SHAPE == "cookbook-gzip":

    def _namer(name: str) -> str:
        return name + ".gz"

    def _rotator(source: str, dest: str) -> None:
        with open(source, "rb") as plain, gzip.open(dest, "wb") as packed:
            shutil.copyfileobj(plain, packed)
        os.remove(source)

    _gzipped = logging.handlers.RotatingFileHandler(FILE, maxBytes=4000, backupCount=30)
    _gzipped.setFormatter(logging.Formatter(FORMAT))
    _gzipped.namer, _gzipped.rotator = _namer, _rotator
    logging.getLogger("shape.app").addHandler(_gzipped)
    logging.getLogger("shape.app").setLevel(logging.INFO)
elif SHAPE == "named-only":
    logging.getLogger("shape.other").addHandler(logging.FileHandler(FILE))
elif SHAPE == "timed-bak":
    _timed = logging.handlers.TimedRotatingFileHandler(FILE, when="S", interval=1, backupCount=50)
    _timed.suffix = "%Y%m%d-%H%M%S.bak"
    _timed.extMatch = re.compile(r"^\d{8}-\d{6}\.bak$", re.ASCII)
    _timed.setFormatter(logging.Formatter(FORMAT))
    logging.getLogger("shape.app").addHandler(_timed)
    logging.getLogger("shape.app").setLevel(logging.INFO)

log: Any = structlog.get_logger("shape.app") if SHAPE == "structlog" else logging.getLogger("shape.app")
StartResponse = Callable[[str, List[Tuple[str, str]]], object]


def app(environ: Dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    query = parse_qs(environ.get("QUERY_STRING", ""))
    if environ.get("PATH_INFO") == "/log":
        rid = query.get("id", [""])[0]
        if SHAPE == "retarget-in-worker" and _first.baseFilename != FILE:
            _first.baseFilename = FILE  # this worker's first request: the stdlib reopens at the next record
            _first.close()
        for i in range(int(query.get("n", ["1"])[0])):
            log.debug("debug %s-%d", rid, i)
            log.info("info %s-%d", rid, i)
            log.warning("warning %s-%d", rid, i)
    elif environ.get("PATH_INFO") == "/print":  # stdout and stderr, gunicorn's capture_output
        rid = query.get("id", [""])[0]
        for i in range(int(query.get("n", ["1"])[0])):
            print(f"print {rid}-{i}", flush=True)
            log.warning("warning %s-%d", rid, i)
    elif environ.get("PATH_INFO") == "/errors":  # the WSGI error stream, gunicorn's error log
        rid = query.get("id", [""])[0]
        for i in range(int(query.get("n", ["1"])[0])):
            environ["wsgi.errors"].write(f"wsgi-errors {rid}-{i}\n")
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok\n"]
