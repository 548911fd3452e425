"""The JSON and text formatters of the master's sinks."""

from __future__ import annotations

import json
import logging
import sys

from forklog import JSONFormatter, TextFormatter
from forklog import _wire as wire


def crossed(msg: str, exc: bool = False, **extra: object) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            exc_info = sys.exc_info()
    record = logging.LogRecord("app", logging.ERROR, "/x.py", 3, msg, (), exc_info)
    record.created, record.msecs = 1_790_000_000.25, 250.0
    record.__dict__.update(extra)
    return wire.decode(wire.encode(record), 99)


def test_json_has_the_design_keys_and_keeps_the_traceback_apart() -> None:
    """time (RFC 3339 UTC ms), level, logger, message, pid, thread; exc_info; extras on top."""
    obj = json.loads(JSONFormatter().format(crossed("line one\nline two", exc=True, request_id="r-1")))
    assert obj["time"] == "2026-09-21T14:13:20.250Z"
    assert (obj["level"], obj["logger"], obj["message"], obj["pid"]) == (
        "ERROR",
        "app",
        "line one\nline two",
        99,
    )
    assert obj["thread"] == "MainThread"
    assert obj["exc_info"].startswith("Traceback") and "RuntimeError: boom" in obj["exc_info"]
    assert obj["request_id"] == "r-1"


def test_json_escapes_newlines_so_one_record_is_one_line() -> None:
    """H15: a message with CR/LF stays on one line."""
    line = JSONFormatter().format(crossed("forged\n2026-01-01 [INFO] fake line\r"))
    assert "\n" not in line and "\r" not in line


def test_extra_named_like_a_key_does_not_overwrite_it() -> None:
    """An extra called "pid" or "level" is kept as extra.<name>."""
    obj = json.loads(JSONFormatter().format(crossed("m", pid="spoof", level="fake")))
    assert (obj["pid"], obj["level"]) == (99, "ERROR")
    assert (obj["extra.pid"], obj["extra.level"]) == ("spoof", "fake")


def test_text_formatter_can_escape_newlines() -> None:
    """The console escapes CR/LF inside messages; the traceback keeps its lines."""
    record = crossed("a\nb", exc=True)
    text = TextFormatter("%(message)s", escape_newlines=True).format(record)
    assert text.startswith("a\\nb\nTraceback")
    assert TextFormatter("%(message)s").format(crossed("a\nb")) == "a\nb"
