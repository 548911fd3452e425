"""A WSGI app logging with structlog's production recipe: ProcessorFormatter + JSONRenderer on a FileHandler.

The handler is set up at import, by hand, as structlog's documentation does it.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable, Dict, Iterable, List, Tuple
from urllib.parse import parse_qs

import structlog

structlog.configure(
    processors=[
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso"),
        structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
    ],
    logger_factory=structlog.stdlib.LoggerFactory(),
    wrapper_class=structlog.stdlib.BoundLogger,
    cache_logger_on_first_use=True,
)
_handler = logging.FileHandler(os.environ["STRUCTLOG_FILE"])
_handler.setFormatter(
    structlog.stdlib.ProcessorFormatter(
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
    )
)
_root = logging.getLogger()
_root.addHandler(_handler)
_root.setLevel(logging.INFO)

log = structlog.get_logger("shop")

StartResponse = Callable[[str, List[Tuple[str, str]]], object]


def app(environ: Dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    rid = parse_qs(environ.get("QUERY_STRING", "")).get("id", [""])[0]
    if environ.get("PATH_INFO") == "/log":
        log.info("order placed", id=rid, items=["a", "b"], total=12.5, pid=os.getpid())
        try:
            raise ValueError(f"bad-{rid}")
        except ValueError:
            log.exception("order failed", id=rid)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
