"""Tracebacks travel as frames and the master writes the text the traceback module would."""

from __future__ import annotations

import linecache
import logging
import marshal
import re
import traceback
from pathlib import Path
from typing import Any, Callable, Dict, List

import pytest

import forklog.testing
from forklog import _wire as wire
from forklog._wire import tracebacks
from forklog._wire.packing import pack_fields

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
    assert '\n    settings["missing"]\n' in record.exc_text, "the source line, sent by the worker"
    assert record.__dict__[wire.EXC_TYPE_ATTR] == "ValueError"
    assert record.__dict__[wire.EXC_MESSAGE_ATTR] == str(exc)


def test_each_frame_carries_its_source_line() -> None:
    """The worker sends each frame's source line, stripped as the traceback module shows it."""
    chain = tracebacks.extract(caught(plain))
    assert chain is not None
    frames = chain[-1][2]
    assert [len(frame) for frame in frames] == [4, 4]
    assert frames[-1][3] == 'settings["missing"]'


def test_a_long_source_line_is_cut() -> None:
    """A source line over MAX_SOURCE characters travels cut, with a marker."""
    long_line = "x = " + repr("y" * 5000)
    filename = "<forklog-test-long-line>"
    linecache.cache[filename] = (len(long_line), None, [long_line + "\n"], filename)
    try:
        namespace: Dict[str, Any] = {}
        exec(compile(long_line + "; 1 / 0", filename, "exec"), namespace)
    except ZeroDivisionError as exc:
        chain = tracebacks.extract(exc)
    finally:
        del linecache.cache[filename]
    assert chain is not None
    source = chain[-1][2][-1][3]
    assert source.startswith(long_line[: tracebacks.MAX_SOURCE])
    assert source.endswith(f" [forklog: truncated {len(long_line) - tracebacks.MAX_SOURCE} characters]")


def test_the_master_reads_no_source_file(tmp_path: Path) -> None:
    """Rendering writes the source lines the frames carry, or none: it opens no file."""
    source = tmp_path / "app.py"
    source.write_text("secret = 1\n")
    chain = [("ValueError", "v", [(str(source), 1, "f", ""), (str(source), 1, "g", "sent = 2")], 0)]
    text = tracebacks.render(tracebacks.check(chain, 1000))
    assert "secret" not in text
    assert "    sent = 2\n" in text


MALFORMED: List[object] = [
    {"not": "a list"},
    [("ValueError", "v", [("only", "two")], 0)],
    [("ValueError", "v", [("file", 1, "f")], 0)],  # wire version 3: no source line
    [("ValueError", "v", [("file", "1", "f", "")], 0)],
    [("ValueError", "v", [("file", 10**5000, "f", "")], 0)],
    [("ValueError", "v", [("file", True, "f", "")], 0)],
    [("ValueError", "v", [("file", 1, "f", None)], 0)],
    [("ValueError", "v", [["file", 1, "f", ""]], 0)],
    [("ValueError", "v", (), 0)],
    [("ValueError", "v", [], 7)],
    [("ValueError", "v", [], 1.0)],
    [("ValueError", b"v", [], 0)],
    [("ValueError", "v", [])],
]


@pytest.mark.parametrize("chain", MALFORMED, ids=range(len(MALFORMED)))
def test_frames_of_another_shape_are_refused(chain: object) -> None:
    """A chain that is not extract()'s shape is a ValueError, never rendered."""
    with pytest.raises(ValueError):
        tracebacks.check(chain, 1 << 20)


def test_malformed_frames_make_the_record_undecodable() -> None:
    """A frames field that is not frames: the record is undecodable (counted by the listener), both paths."""
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "m", (), None)
    fields = list(wire.fields_of(record))
    fields[wire.Field.EXCEPTION] = (None, "ValueError", "v", [("only", "two")])
    with pytest.raises(ValueError):
        wire.decode(pack_fields(tuple(fields)), 1)
    with pytest.raises(ValueError):
        wire.traceback_bytes(marshal.dumps([("ValueError", "v", [("only", "two")], 0)]))


def test_shared_frame_lists_cannot_multiply_the_walk() -> None:
    """Back-references naming one list of frames from many links: refused (they name a container)."""
    frames = [("f.py", 1, "f", "")] * 1000
    payload = marshal.dumps([("ValueError", "v", frames, 2)] * 1000)
    assert len(payload) < 20_000  # a million frames to walk
    with pytest.raises(ValueError):
        wire.traceback_bytes(payload)


def test_the_text_is_bounded_whatever_the_back_references() -> None:
    """Frames naming one long string many times: the master's text stays within MAX_TEXT, with a marker."""
    long_name = "d/" * 50_000
    frames = [(long_name, line, "f", "") for line in range(40)]
    payload = marshal.dumps([("ValueError", "v", frames, 0)])
    assert len(payload) < 200_000 and 40 * len(long_name) > tracebacks.MAX_TEXT
    text = wire.traceback_bytes(payload)
    assert len(text) < tracebacks.MAX_TEXT + 200_000
    assert b"[forklog: the rest of the traceback left out" in text
    assert text.endswith(b"\nValueError: v")


def test_back_references_name_text_in_proportion_to_the_payload() -> None:
    """Thousands of frames naming one long string: refused before the master renders any of it."""
    long_name = "d/" * 50_000
    frames = [(long_name, line, "f", "") for line in range(4000)]
    payload = marshal.dumps([("ValueError", "v", frames, 0)])
    with pytest.raises(ValueError, match="back-references name more text"):
        wire.traceback_bytes(payload)
