"""A small ASGI app for the uvicorn and gunicorn asgi worker tests: the demo's /burst, over ASGI."""

from __future__ import annotations

import itertools
import logging
import os
from typing import Any, Awaitable, Callable, Dict, List
from urllib.parse import parse_qs

log = logging.getLogger("app")
_counter = itertools.count()

Receive = Callable[[], Awaitable[Dict[str, Any]]]
Send = Callable[[Dict[str, Any]], Awaitable[None]]


def _burst(query: Dict[str, List[str]]) -> str:
    n = int(query.get("n", ["10"])[0])
    rid = query.get("id", ["-"])[0]
    big = int(query.get("big", ["5000"])[0])
    for i in range(n):
        level = (logging.DEBUG, logging.INFO, logging.WARNING)[i % 3]
        log.log(level, "burst id=%s i=%d/%d seq=%d", rid, i, n, next(_counter))
    if big:
        log.info("burst-big id=%s seq=%d payload=%s end", rid, next(_counter), "x" * big)
    return f"logged {n + (1 if big else 0)} records\n"


async def app(scope: Dict[str, Any], receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                log.info("lifespan startup in pid %d", os.getpid())
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                log.info("lifespan shutdown in pid %d", os.getpid())
                await send({"type": "lifespan.shutdown.complete"})
                return
    path = scope.get("path", "/")
    query = parse_qs(scope.get("query_string", b"").decode())
    body = _burst(query) if path == "/burst" else "ok\n"
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body.encode()})
