"""A WSGI app whose routes play a compromised worker (issue 21): each attacks the master from inside.

Served by a real gunicorn with a root master and ``nobody`` workers in
tests/integration/test_hostile_worker.py. Every route answers 200 unless
its attack ends the worker.
"""

from __future__ import annotations

import logging
import math
import os
import time
from typing import Callable, Iterable, List

import forklog.gunicorn

log = logging.getLogger("hostile")


def _stop_token() -> None:
    """Send, as control frames, every byte string this worker holds of the hub and its threads."""
    hub = forklog.gunicorn.hub()
    assert hub is not None
    held: List[bytes] = []
    for part in (hub, hub._receiver, hub._listener, hub.queue):
        held += [value for value in vars(part).values() if isinstance(value, bytes)]
    for value in held:
        hub.queue.send_control(value, 1.0)


def _time_out_of_range() -> None:
    """A record stamped ``inf``, then a drop report (stamped with the stream's time)."""
    hub = forklog.gunicorn.hub()
    assert hub is not None
    record = logging.LogRecord("hostile", logging.WARNING, __file__, 1, "out of time", (), None)
    record.created = math.inf
    hub.queue.send_record(record)
    hub.queue._count_drop("INFO")
    hub.queue.flush(1.0)


def _truncate_the_scoreboard() -> None:
    """Cut the shared scoreboard to 17 bytes, then die: the master settles this worker with it."""
    hub = forklog.gunicorn.hub()
    assert hub is not None and hub.queue.scoreboard is not None
    os.ftruncate(hub.queue.scoreboard.fd, 17)
    os._exit(1)


ATTACKS = {
    "/stop-token": _stop_token,
    "/time-out-of-range": _time_out_of_range,
    "/truncate-the-scoreboard": _truncate_the_scoreboard,
}


def app(environ: dict, start_response: Callable[..., object]) -> Iterable[bytes]:  # type: ignore[type-arg]
    path = environ.get("PATH_INFO", "/")
    attack = ATTACKS.get(path)
    if attack is not None:
        attack()
    elif path == "/mark":
        query = environ.get("QUERY_STRING", "")
        log.warning("mark %s", query.split("&hold=")[0])
        if "&hold=" in query:  # the worker stays busy: the next request goes to the other
            time.sleep(float(query.split("&hold=")[1]))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"{os.getpid()}\n".encode()]  # the worker that served it
