"""Record preparation: what a record looks like after crossing the boundary."""

from __future__ import annotations

import logging
import socket
import sys
import threading
from typing import Any

from forklog import _wire as wire
from tests.support import Bad, Recursive


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


def test_texts_holding_nuls_travel_whole() -> None:
    """The texts are joined by NULs when none holds one; a NUL in any text, in any field, travels too."""
    for field in ("name", "msg", "pathname", "funcName", "threadName", "processName", "stack_info"):
        record = make("plain")
        setattr(record, field, f"a\x00{field}\x00b")
        back = roundtrip(record)
        assert getattr(back, field) == f"a\x00{field}\x00b"
        others = [f for f in ("name", "pathname", "funcName", "threadName", "processName") if f != field]
        assert [getattr(back, f) for f in others] == [getattr(record, f) for f in others]
    assert roundtrip(make("plain")).getMessage() == "plain"


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


class AppError(Exception):
    """An exception class defined outside builtins, nested in nothing."""


def test_exception_type_and_message_travel_beside_the_traceback() -> None:
    """A record with exc_info carries the exception's qualified type name and str() as their own fields."""
    try:
        raise AppError("card declined: 402")
    except AppError:
        exc_info = sys.exc_info()
    record = roundtrip(make("payment failed", level=logging.ERROR, exc_info=exc_info))
    assert record.__dict__[wire.EXC_TYPE_ATTR] == f"{__name__}.AppError"
    assert record.__dict__[wire.EXC_MESSAGE_ATTR] == "card declined: 402"
    assert record.exc_text is not None and "AppError: card declined: 402" in record.exc_text
    try:
        raise KeyError("missing")
    except KeyError:
        builtin = roundtrip(make("lookup", exc_info=sys.exc_info()))
    assert (builtin.__dict__[wire.EXC_TYPE_ATTR], builtin.__dict__[wire.EXC_MESSAGE_ATTR]) == (
        "KeyError",
        "'missing'",
    )


def test_records_without_an_exception_get_no_exception_fields() -> None:
    """A plain record, an exc_text set by hand and exc_info outside an except block add no type or message."""
    plain = roundtrip(make("hello"))
    assert wire.EXC_TYPE_ATTR not in plain.__dict__ and wire.EXC_MESSAGE_ATTR not in plain.__dict__
    preformatted = make("preformatted")
    preformatted.exc_text = "Traceback (most recent call last):\nValueError: x"
    record = roundtrip(preformatted)
    assert record.exc_text == "Traceback (most recent call last):\nValueError: x"
    assert wire.EXC_TYPE_ATTR not in record.__dict__
    outside = roundtrip(make("no exception active", exc_info=(None, None, None)))
    assert outside.exc_text == "NoneType: None" and wire.EXC_TYPE_ATTR not in outside.__dict__


def test_an_exception_whose_str_raises_still_has_its_type() -> None:
    """An exception whose __str__ raises keeps its type; the message falls back to a readable repr."""

    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no str")

    try:
        raise Unprintable()
    except Unprintable:
        record = roundtrip(make("odd", exc_info=sys.exc_info()))
    assert record.__dict__[wire.EXC_TYPE_ATTR].endswith("Unprintable")
    assert record.__dict__[wire.EXC_MESSAGE_ATTR] == "Unprintable()"


def test_exception_fields_are_not_extras() -> None:
    """The exception fields are standard attributes: JSONFormatter does not print them as extra keys."""
    import json

    from forklog.formatters import JSONFormatter

    try:
        raise ValueError("bad")
    except ValueError:
        record = roundtrip(make("failed", level=logging.ERROR, exc_info=sys.exc_info(), user=7))
    line = json.loads(JSONFormatter().format(record))
    assert line["user"] == 7 and "ValueError: bad" in line["exc_info"]
    assert not any(key.startswith("forklog_exc") for key in line)


def test_a_huge_exception_message_is_truncated() -> None:
    """A huge exception message and its traceback are both cut to one length, with markers, to fit."""
    try:
        raise ValueError("v" * 300_000)
    except ValueError:
        payload = wire.encode(make("failed", exc_info=sys.exc_info()), max_bytes=50_000)
    assert len(payload) <= 50_000
    record = wire.decode(payload, 1)
    assert record.getMessage() == "failed"  # a short message is not cut for a long traceback
    traceback = record.exc_text
    assert traceback is not None and traceback.startswith("Traceback (most recent call last):\n  File ")
    assert traceback.endswith("characters]")
    message = record.__dict__[wire.EXC_MESSAGE_ATTR]
    assert message.startswith("vvv") and message.endswith("characters]")
    assert abs(len(traceback) - len(message)) < 1000  # both cut to one length
    assert record.__dict__[wire.EXC_TYPE_ATTR] == "ValueError"


def test_a_payload_of_the_previous_format_is_rejected() -> None:
    """A payload whose format version is not FORMAT_VERSION is a ValueError, not a misread record."""
    from forklog._wire.packing import pack_fields

    fields = list(wire.decode_fields(wire.encode(make("x"))))
    fields[0] = wire.FORMAT_VERSION - 1
    try:
        wire.decode(pack_fields(tuple(fields)), 1)
    except ValueError:
        return
    raise AssertionError("a version-1 payload was accepted")
