"""A WSGI app with its own rotating log, whose worker plants links to root-only paths (issue 21, item 1).

Loaded with ``--preload`` by a root master (so the master writes the app's
file), served by ``nobody`` workers. The app's directory, and the hub's own
log directory, belong to ``nobody``: the directory the app needed without
forklog. ``/plant`` replaces the log files and the rotation lock with links
to ``SYMLINK_APP_TARGETS``' paths; ``/log?n=N`` logs N lines.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import time
from typing import Callable, Iterable
from urllib.parse import parse_qs

APP_DIR = os.environ["SYMLINK_APP_DIR"]
#: Where the links point: a new path and an existing root-only file, both in a root-only directory.
NEW_PATH, SENTINEL = os.environ["SYMLINK_APP_TARGETS"].split(":")
#: The hub's own file, in a directory the workers can write too.
HUB_FILE = os.environ["FORKLOG_FILE"]

log = logging.getLogger("symlinked")
log.setLevel(logging.INFO)
log.propagate = False
log.addHandler(
    logging.handlers.RotatingFileHandler(os.path.join(APP_DIR, "app.log"), maxBytes=4000, backupCount=2)
)
mark = logging.getLogger("mark")


def _link(path: str, target: str) -> None:
    if os.path.lexists(path):
        os.unlink(path)
    os.symlink(target, path)


def _plant() -> None:
    base = os.path.join(APP_DIR, "app.log")
    _link(base, NEW_PATH)
    _link(base + ".1", SENTINEL)
    _link(base + ".lock", NEW_PATH + ".lock")
    _link(HUB_FILE, SENTINEL)
    _link(HUB_FILE + ".lock", NEW_PATH + ".hub-lock")


def app(environ: dict, start_response: Callable[..., object]) -> Iterable[bytes]:  # type: ignore[type-arg]
    path = environ.get("PATH_INFO", "/")
    query = parse_qs(environ.get("QUERY_STRING", ""))
    if path == "/plant":
        _plant()
    elif path == "/log":
        for i in range(int(query.get("n", ["1"])[0])):
            log.info("app line %d %s", i, "x" * 100)
    elif path == "/mark":
        mark.warning("mark %s", query.get("id", [""])[0])
        time.sleep(float(query.get("hold", ["0"])[0]))  # busy: the next request goes to the other
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"{os.getpid()}\n".encode()]  # the worker that served it
