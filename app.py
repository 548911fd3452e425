"""A small WSGI app that logs at several levels, for the forklog demo.

``/``            DEBUG (file only), INFO and a WARNING
``/error``       an exception logged with its traceback
``/burst?n=50``  ``n`` numbered records, then one over 4 KiB (load tests)
``/health``      logs nothing but its access line

Every record of a request carries its ``request_id`` (the ``X-Request-Id``
header, or a fresh one), bound with :func:`forklog.bound` around the call:
it shows in the JSON file (``FORKLOG_FORMAT=json``), syslog and OTLP.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import uuid
from typing import Any, Callable, Dict, Iterable, List, Tuple
from urllib.parse import parse_qs

import forklog

log = logging.getLogger("app")
_counter = itertools.count()  # records this process logged, in order
_counter_lock = threading.Lock()

StartResponse = Callable[[str, List[Tuple[str, str]]], object]


def _next() -> int:
    with _counter_lock:
        return next(_counter)


def _index() -> str:
    log.debug("rendering the index page in pid %d", os.getpid())
    log.info("hello from pid %d", os.getpid())
    log.warning("this warning reaches the console and the file")
    return "forklog demo: see logs/app.log and the console\n"


def _error() -> str:
    try:
        settings: Dict[str, str] = {}
        settings["missing"]
    except KeyError:
        log.exception("a handled error, with its traceback")
    return "an error was logged with its traceback\n"


def _burst(query: Dict[str, List[str]]) -> str:
    n = int(query.get("n", ["10"])[0])
    rid = query.get("id", ["-"])[0]
    big = int(query.get("big", ["5000"])[0])
    for i in range(n):
        seq = _next()
        level = (logging.DEBUG, logging.INFO, logging.WARNING)[i % 3]
        log.log(level, "burst id=%s i=%d/%d seq=%d", rid, i, n, seq)
    if big:
        seq = _next()
        log.info("burst-big id=%s seq=%d payload=%s end", rid, seq, "x" * big)
    return f"logged {n + (1 if big else 0)} records\n"


def app(environ: Dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    request_id = environ.get("HTTP_X_REQUEST_ID") or uuid.uuid4().hex[:16]
    with forklog.bound(request_id=request_id):
        return _route(environ, start_response)


def _route(environ: Dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    path = environ.get("PATH_INFO", "/")
    query = parse_qs(environ.get("QUERY_STRING", ""))
    if path == "/":
        body = _index()
    elif path == "/error":
        body = _error()
    elif path == "/burst":
        body = _burst(query)
    elif path == "/health":
        body = "ok\n"
    else:
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found\n"]
    data = body.encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(data)))])
    return [data]
