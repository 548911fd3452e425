"""Tracebacks travel as frames and the master writes the text the traceback module would."""

from __future__ import annotations

import logging
import marshal
import re
import traceback
from typing import Any, Callable, Dict, List, cast

import pytest

import forklog.testing
from forklog import _wire as wire
from forklog._wire import tracebacks

# Column markers (3.11+): the one thing the master's text leaves out.
MARKERS = re.compile(r"^\s*[\^~]+\s*$")


def stdlib_text(exc: BaseException) -> str:
    lines = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).splitlines()
    return "\n".join(line for line in lines if not MARKERS.match(line))


def caught(fn: Callable[[], object]) -> BaseException:
    try:
        fn()
    except BaseException as exc:
        return exc
    raise AssertionError("expected an exception")


def plain() -> None:
    settings: Dict[str, str] = {}
    settings["missing"]


def caused() -> None:
    try:
        plain()
    except KeyError as exc:
        raise ValueError("bad config") from exc


def during() -> None:
    try:
        plain()
    except KeyError:
        raise RuntimeError("while handling")  # noqa: B904 - the implicit context is the point


def suppressed() -> None:
    try:
        plain()
    except KeyError:
        raise RuntimeError("context hidden") from None


def recurse(n: int) -> int:
    return recurse(n + 1)


class Unprintable(Exception):
    def __str__(self) -> str:
        raise TypeError("no str")


def unprintable() -> None:
    raise Unprintable()


CASES: List[Callable[[], object]] = [plain, caused, during, suppressed, lambda: recurse(0), unprintable]


@pytest.mark.parametrize("fn", CASES, ids=["plain", "cause", "context", "suppressed", "recursion", "bad-str"])
def test_rendered_text_matches_the_traceback_module(fn: Callable[[], object]) -> None:
    """For plain chains, frames rendered in the master give the traceback module's text."""
    exc = caught(fn)
    chain = tracebacks.extract(exc)
    assert chain is not None
    assert tracebacks.render(chain) == stdlib_text(exc)


def test_an_exception_without_a_traceback() -> None:
    """An exception that was never raised has no 'Traceback' header, like the stdlib's."""
    exc = ValueError("made, not raised")
    assert tracebacks.render(tracebacks.extract(exc) or []) == stdlib_text(exc)


def special() -> List[BaseException]:
    noted = caught(plain)
    noted.add_note("a note")
    return [caught(lambda: compile("x = (", "<cfg>", "exec")), noted, ExceptionGroup("g", [ValueError("v")])]


@pytest.mark.parametrize("index", range(len(special())))
def test_special_exceptions_are_formatted_in_the_worker(index: int) -> None:
    """Syntax errors, notes and exception groups keep the full formatter's text."""
    exc = special()[index]
    assert tracebacks.extract(exc) is None
    with forklog.testing.capture("special") as logs:
        logging.getLogger("special").error("failed", exc_info=exc)
    record = logs.assert_logged("failed")
    expected = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip("\n")
    assert record.exc_text == expected


def test_a_logged_exception_arrives_with_the_rendered_text() -> None:
    """Through the hub: the record's exc_text, type and message, from frames sent by the worker."""
    with forklog.testing.capture("tb") as logs:
        try:
            caused()
        except ValueError:
            logging.getLogger("tb").exception("config failed")
    record = logs.assert_logged("config failed")
    exc = caught(caused)
    assert record.exc_text is not None
    assert record.exc_text.splitlines()[-1] == "ValueError: bad config"
    assert "The above exception was the direct cause of the following exception:" in record.exc_text
    assert '\n    settings["missing"]\n' in record.exc_text, "the source line, read by the master"
    assert record.__dict__[wire.EXC_TYPE_ATTR] == "ValueError"
    assert record.__dict__[wire.EXC_MESSAGE_ATTR] == str(exc)


def test_malformed_frames_from_the_pipe_do_not_stop_the_listener() -> None:
    """A frames field that is not frames becomes a visible note on the record."""
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "m", (), None)
    fields = list(wire.fields_of(record))
    fields[14] = (None, "ValueError", "v", [("only", "two")])
    decoded = wire.decode(marshal.dumps(cast(Any, tuple(fields))), 1)
    assert decoded.exc_text is not None and decoded.exc_text.startswith(
        "[forklog: could not write the traceback"
    )
