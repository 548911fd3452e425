"""The WSGI app of ``python -m benchmarks.http``: ten log calls a request, a tiny answer.

Every request to any path but ``/ready`` makes, on the logger ``bench.http``:

* 8 INFO records, each with a message of about 120 bytes (7 arguments);
* 1 DEBUG record;
* 1 WARNING record with two ``extra`` fields (``user_id``, ``order_id``).

``/ready`` logs nothing and answers with the worker's pid: the benchmark
polls it until every worker has answered. When ``BENCH_HTTP_SERVED`` names a
folder, each worker writes there at its exit how many requests it served
(``served-<pid>``): what was logged, to compare with what was written. The
app configures no logging: each setup's gunicorn config does
(benchmarks/http.py writes them).
"""

from __future__ import annotations

import atexit
import itertools
import logging
import os
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Tuple

#: The app's logger; the benchmark counts the lines of this logger only.
LOGGER = "bench.http"
#: Records logged per request.
RECORDS_PER_REQUEST = 10
MESSAGE = "GET /api/v1/orders/%d step=%d user=%s region=%s cache=%s status=%d bytes=%d upstream_ms=%.3f"

#: The folder where each worker writes the requests it served, at its exit.
SERVED_ENV = "BENCH_HTTP_SERVED"

StartResponse = Callable[[str, List[Tuple[str, str]]], object]

log = logging.getLogger(LOGGER)
_requests = itertools.count()  # next() on it is atomic under the GIL (gthread)
_BODY = b"ok\n"


def _write_served() -> None:
    folder = os.environ.get(SERVED_ENV)
    if folder:
        # next() returns how many requests took a number before: every one that logged.
        Path(folder, f"served-{os.getpid()}").write_text(str(next(_requests)))


atexit.register(_write_served)


def app(environ: Dict[str, object], start_response: StartResponse) -> Iterable[bytes]:
    """Log ten records and answer ``ok``; ``/ready`` answers the pid and logs nothing."""
    if environ.get("PATH_INFO") == "/ready":
        body = str(os.getpid()).encode()
    else:
        n = next(_requests)
        for step in range(8):
            log.info(MESSAGE, 100_000 + n, step, "alice@example.com", "eu-west-1", "hit", 200, 18432, 12.345)
        log.debug("cache lookup order=%d took %d us", 100_000 + n, 87)
        log.warning(
            "slow upstream for order %d: %.1f ms",
            100_000 + n,
            250.0,
            extra={"user_id": 4242, "order_id": 100_000 + n},
        )
        body = _BODY
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
