"""A plain WSGI app for the adoption tests: what it logs on /audit, and handlers a test asks for at import."""

from __future__ import annotations

import logging
import os
from typing import Any, Callable, Dict, Iterable, List, Tuple
from urllib.parse import parse_qs

audit = logging.getLogger("app.audit")
views = logging.getLogger("app.views")
# The app's own level: once it configures a handler, root is back at the stdlib's WARNING.
audit.setLevel(logging.INFO)
views.setLevel(logging.INFO)

# A handler the app's own config names (ADOPTING_APP_FILE): delay=True, as an
# app does when the file may not be openable yet.
if os.environ.get("ADOPTING_APP_FILE"):
    _handler = logging.FileHandler(os.environ["ADOPTING_APP_FILE"], delay=True)
    _handler.setFormatter(logging.Formatter("%(process)d %(message)s"))
    audit.addHandler(_handler)


def _forge(path: str) -> None:
    """What a compromised worker can do: write a target payload for any path straight into the pipe."""
    from forklog._wire import adopted_lines as _target
    from forklog._worker import adoption

    channel = adoption.attached()
    if channel is not None:
        record = logging.makeLogRecord({"msg": "forged", "levelno": logging.INFO, "levelname": "INFO"})
        channel.send_text(_target.TargetSpec("file", path).to_bytes(), record, "* * * * * root forged", "\n")


StartResponse = Callable[[str, List[Tuple[str, str]]], object]
_lazy: List[str] = [p for p in os.environ.get("ADOPTING_APP_LAZY_FILES", "").split(os.pathsep) if p]


def _configure_lazily() -> None:
    """Handlers the worker itself configures on its first request (after gunicorn's --user took effect)."""
    while _lazy:
        handler = logging.FileHandler(_lazy.pop(), delay=True)
        handler.setFormatter(logging.Formatter("%(process)d %(message)s"))
        audit.addHandler(handler)


def app(environ: Dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    rid = parse_qs(environ.get("QUERY_STRING", "")).get("id", [""])[0]
    if environ.get("PATH_INFO") == "/forge":
        _forge(parse_qs(environ.get("QUERY_STRING", "")).get("path", [""])[0])
    if environ.get("PATH_INFO") == "/audit":
        _configure_lazily()
        audit.info("audit id=%s", rid)
        views.info("app id=%s", rid)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
