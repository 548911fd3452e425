"""Record preparation: what a record looks like after crossing the boundary."""

from __future__ import annotations

import logging
import socket
import sys
import threading
from typing import Any

from forklog import wire


def roundtrip(record: logging.LogRecord) -> logging.LogRecord:
    return wire.decode(wire.encode(record), 4242)


def make(
    msg: Any, *args: Any, level: int = logging.INFO, exc_info: Any = None, **extra: Any
) -> logging.LogRecord:
    record = logging.LogRecord(
        "app.mod", level, "/srv/app/mod.py", 12, msg, args or None, exc_info, "handler"
    )
    if not args:
        record.args = ()
    record.__dict__.update(extra)
    return record


class Bad:
    def __str__(self) -> str:
        raise RuntimeError("no str")

    def __repr__(self) -> str:
        raise RuntimeError("no repr")


class Recursive:
    def __repr__(self) -> str:
        return repr(self)


def test_message_is_merged_with_args() -> None:
    """The worker merges msg % args; the master receives plain text and no args."""
    record = roundtrip(make("user %s has %d items", "ann", 3))
    assert record.getMessage() == "user ann has 3 items"
    assert record.args is None
    assert (record.name, record.levelno, record.levelname) == ("app.mod", logging.INFO, "INFO")
    assert (record.pathname, record.filename, record.module, record.lineno) == (
        "/srv/app/mod.py",
        "mod.py",
        "mod",
        12,
    )
    assert record.funcName == "handler" and record.process == 4242


def test_traceback_and_stack_travel_as_separate_fields() -> None:
    """H9: exc_info and stack_info stay out of the message, as text fields."""
    try:
        raise KeyError("missing")
    except KeyError:
        exc_info = sys.exc_info()
    original = make("failed", level=logging.ERROR, exc_info=exc_info)
    original.stack_info = "Stack (most recent call last):\n  File x"
    record = roundtrip(original)
    assert record.getMessage() == "failed"
    assert record.exc_info is None
    assert record.exc_text is not None and record.exc_text.startswith("Traceback (most recent call last)")
    assert "KeyError: 'missing'" in record.exc_text
    assert record.stack_info == "Stack (most recent call last):\n  File x"
    text = logging.Formatter("%(message)s").format(record)
    assert text.startswith("failed\nTraceback") and text.endswith("File x")


def test_unpicklable_args_and_extras() -> None:
    """H10: a lock, a socket, a lambda become repr() text; plain extras stay data."""
    lock = threading.Lock()
    with socket.socket() as sock:
        record = roundtrip(
            make("lock=%s", lock, conn=sock, fn=lambda: 1, user={"id": 7, "tags": ["a", "b"]}, n=3)
        )
    assert record.getMessage().startswith("lock=<unlocked _thread.lock")
    assert record.__dict__["conn"].startswith("<socket.socket")
    assert record.__dict__["fn"].startswith("<function")
    assert record.__dict__["user"] == {"id": 7, "tags": ["a", "b"]}
    assert record.__dict__["n"] == 3


def test_format_mismatch_still_delivers() -> None:
    """A %-format mismatch gives a record that says what went wrong, not an exception."""
    record = roundtrip(make("%d items for %s", "not-a-number"))
    message = record.getMessage()
    assert message.startswith("%d items for %s % ('not-a-number',)")
    assert "could not merge args: TypeError" in message


def test_raising_and_recursing_objects() -> None:
    """A __str__/__repr__ that raises or recurses, and a non-string msg, all deliver."""
    assert "<unrepresentable Bad object>" in roundtrip(make(Bad())).getMessage()
    assert roundtrip(make("x", obj=Recursive())).__dict__["obj"] == "<unrepresentable Recursive object>"
    assert roundtrip(make({"a": 1})).getMessage() == "{'a': 1}"
    assert roundtrip(make("v=%s", Bad())).getMessage().startswith("v=%s")


def test_surrogates_and_huge_extras() -> None:
    """Lone surrogates survive; an extra with a thousand keys is kept."""
    record = roundtrip(make("bad \udcff text", many={str(i): i for i in range(1000)}))
    assert record.getMessage() == "bad \udcff text"
    assert len(record.__dict__["many"]) == 1000


def test_oversized_record_is_truncated_with_a_marker() -> None:
    """Over max_bytes, the message is cut and says so."""
    payload = wire.encode(make("x" * 200_000), max_bytes=50_000)
    assert len(payload) <= 50_000
    message = wire.decode(payload, 1).getMessage()
    assert message.startswith("xxx") and message.endswith("characters]")
    assert "[forklog: truncated" in message


def test_garbage_payload_is_a_value_error() -> None:
    """decode() rejects what encode() did not make."""
    for payload in (b"", b"\x00\x01garbage", wire.encode(make("x"))[:-3]):
        try:
            wire.decode(payload, 1)
        except ValueError:
            continue
        raise AssertionError(f"{payload!r} was accepted")
