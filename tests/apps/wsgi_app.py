"""The demo app plus what lifecycle tests need: a log line at import, a page that hangs."""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any, Callable, Dict, Iterable, List, Tuple

import app as demo

logging.getLogger("app").warning("app imported in pid %d", os.getpid())

StartResponse = Callable[[str, List[Tuple[str, str]]], object]


def sleep_forever() -> None:
    """The stuck request the timeout test waits on."""
    time.sleep(60)


def app(environ: Dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    if environ.get("PATH_INFO") == "/hang":
        sleep_forever()
    if environ.get("PATH_INFO") == "/print":
        rid = environ.get("QUERY_STRING", "")
        print(f"printed {rid} line one\nprinted {rid} line two")
        sys.stderr.write(f"stderr {rid}\n")
        environ["PATH_INFO"] = "/health"
    return demo.app(environ, start_response)
