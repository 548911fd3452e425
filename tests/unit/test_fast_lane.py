"""The listener's fast lane writes the very bytes the LogRecord path writes.

For file and stream sinks whose formatter it can reproduce, the listener
makes each line straight from the decoded fields (no ``LogRecord``, no
``Formatter.format``). Every record and formatter here is rendered both
ways and compared, then whole batches go through a ``Listener`` with the
lane on and off, into several sinks at once, and the files and the counters
must be the same.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import pytest

from forklog import JSONFormatter, RotatingFileSink, TextFormatter
from forklog import _wire as wire
from forklog._master import scheduling as threads
from forklog._master.backlog import DROPS, RECORD, Backlog
from forklog._master.counters import Counters
from forklog._master.listener import Listener
from forklog._renderers import line_renderer
from forklog._stderr import Reporter
from forklog._wire import framing
from forklog._wire.packing import pack_fields

PID = 4242
ALL_ATTRS = (
    "%(name)s|%(levelno)d|%(levelname)s|%(pathname)s|%(filename)s|%(module)s|%(lineno)d|"
    "%(funcName)s|%(created)f|%(msecs)03d|%(relativeCreated)d|%(thread)s|%(threadName)s|"
    "%(processName)s|%(process)d|%(msg)s|%(args)s|%(exc_info)s|%(exc_text)r|%(stack_info)r|"
    "%(asctime)s|%(message)s"
) + ("|%(taskName)s" if sys.version_info >= (3, 12) else "")
BENCH = "%(asctime)s [%(levelname)s] %(name)s %(process)d %(threadName)s - %(message)s"


def _gmtime_formatter() -> logging.Formatter:
    formatter = TextFormatter("%(asctime)s %(levelname)-8s %(message)s")
    formatter.converter = time.gmtime
    return formatter


FORMATTERS: Dict[str, Callable[[], logging.Formatter]] = {
    "bench": lambda: TextFormatter(BENCH),
    "bench, escaped": lambda: TextFormatter(BENCH, escape_newlines=True),
    "datefmt": lambda: TextFormatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"),
    "datefmt, escaped": lambda: TextFormatter("%(asctime)s %(message)s", "%d/%m %H:%M", escape_newlines=True),
    "empty datefmt": lambda: TextFormatter("%(asctime)s %(message)s", ""),
    "every attribute": lambda: TextFormatter(ALL_ATTRS),
    "every attribute, escaped": lambda: TextFormatter(ALL_ATTRS, escape_newlines=True),
    "widths and %%": lambda: TextFormatter(
        "100%% %(levelname)-8s|%(lineno)5d|%(name).3s|%(msecs)08.3f %(message)s"
    ),
    "time in a literal": lambda: TextFormatter("%%(asctime) %(message)s"),
    "no directive": lambda: logging.Formatter("constant 100%%", validate=False),
    "gmtime": _gmtime_formatter,
    "stdlib default": logging.Formatter,
    "stdlib": lambda: logging.Formatter(BENCH),
    "stdlib datefmt": lambda: logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"),
    "json": JSONFormatter,
}


class Weird:
    def __repr__(self) -> str:
        return "<weird \u00e9>"


def _records() -> List[logging.LogRecord]:
    made: List[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            made.append(record)

    log = logging.getLogger("fast.lane")
    log.propagate = False
    log.setLevel(1)
    handler = Keep()
    log.addHandler(handler)
    logging.addLevelName(25, "NOTICE")
    try:
        log.info("request handled path=/api/v1/items/%d user=%s", 7, "alice")
        log.warning("unicode: h\u00e9llo \u4e16\u754c \U0001f600 \u202e rtl")
        log.error("two\nlines\r\nand a CR\r")
        log.info("ends with a newline\n")
        log.info("")
        log.info("%s %%d %(x)s", "literal")  # a message that fails to merge
        log.info("%(user)s in a dict", {"user": "bob"})
        log.info(42)
        log.info(["not", "a", "string"])
        log.info("lone surrogate \ud800 here")
        log.log(25, "a named odd level")
        log.log(33, "an unnamed level")
        log.log(5, "below debug")
        log.critical("critical")
        log.info(
            "with extras", extra={"user": "carol", "n": 3, "obj": Weird(), "time": "clash", "d": {"a": [1]}}
        )
        log.info("float extras", extra={"nan": float("nan"), "inf": float("inf")})
        log.info("stack", stack_info=True)
        try:
            raise ValueError("bad \u00e9 item\nsecond line")
        except ValueError:
            log.exception("failed %s", "op")
            log.error("with stack too", exc_info=True, stack_info=True)
        try:
            try:
                int("missing")
            except ValueError as exc:
                raise RuntimeError("chained") from exc
        except RuntimeError:
            log.exception("chain")
        log.error("exc_info outside an except block", exc_info=True)
        log.error("a hand-made exc_info", exc_info=(ValueError, ValueError("x"), None))
        record = log.makeRecord("fast.lane", logging.ERROR, "/x.py", 1, "preset exc_text", (), None)
        record.exc_text = "Traceback (most recent call last):\n  preset"
        made.append(record)

        async def in_a_task() -> None:
            log.info("inside a task")

        asyncio.run(in_a_task())
    finally:
        log.removeHandler(handler)
    # The same records at other times: before 1970, far ahead, on a second's edge.
    out = []
    for created in (None, 1_790_000_000.999, 1_790_000_001.0005, 12.5, 4_102_444_800.25):
        for original in made:
            copy = logging.makeLogRecord(dict(original.__dict__))
            if created is not None:
                copy.created, copy.msecs = created, (created - int(created)) * 1000
            out.append(copy)
    return out


RECORDS = _records()
PAYLOADS = [wire.encode(record) for record in RECORDS]


def _slow(formatter: logging.Formatter, payload: bytes) -> Tuple[str, Optional[str]]:
    try:
        return "ok", formatter.format(wire.decode(payload, PID))
    except Exception as exc:
        return "raised", type(exc).__name__


def _fast(render: Any, payload: bytes) -> Tuple[str, Optional[str]]:
    fields = wire.decode_fields(payload)
    try:
        return "ok", render(fields, PID, wire.exception_text(fields[14]))
    except Exception as exc:
        return "raised", type(exc).__name__


@pytest.mark.parametrize("kind", sorted(FORMATTERS))
def test_every_record_renders_as_format_does(kind: str) -> None:
    """The fast lane renders every record exactly as the formatter's format() does."""
    # Two formatter instances, each with a time cache of its own, kept
    # across records whose times go back and forth.
    render, formatter = line_renderer(FORMATTERS[kind]()), FORMATTERS[kind]()
    assert render is not None
    for payload in PAYLOADS + PAYLOADS[::-1]:
        assert _fast(render, payload) == _slow(formatter, payload), kind


def test_json_lines_are_valid_and_identical() -> None:
    """The fast lane's JSON lines are valid JSON, identical to JSONFormatter's."""
    formatter = JSONFormatter()
    render = line_renderer(formatter)
    assert render is not None
    for payload in PAYLOADS:
        fields = wire.decode_fields(payload)
        line = render(fields, PID, wire.exception_text(fields[14]))
        assert json.loads(line)["pid"] == PID
        assert line == formatter.format(wire.decode(payload, PID))


class Sub(TextFormatter):
    pass


@pytest.mark.parametrize(
    "formatter",
    [
        TextFormatter("%(message)s %(user)s"),  # an extra
        TextFormatter("%(forklog_exc_type)s %(message)s"),  # only records with exc_info have it
        TextFormatter("%(message)s %(lineno)ld"),  # a directive the lane does not parse
        TextFormatter("%(message)s %(a(b))s"),
        logging.Formatter("{message}", style="{"),
        logging.Formatter("$message", style="$"),
        Sub("%(message)s"),
    ],
)
def test_formatters_it_cannot_reproduce_have_no_lane(formatter: logging.Formatter) -> None:
    """A formatter the lane cannot reproduce gets no lane: the LogRecord path."""
    assert line_renderer(formatter) is None


def test_defaults_have_no_lane() -> None:
    """A formatter with defaults (Formatter(defaults=), 3.10+) keeps the slow path."""
    formatter = logging.Formatter("%(message)s")
    assert line_renderer(formatter) is not None
    # What Formatter(defaults={"x": 1}) sets on 3.10+; set by hand on every version.
    formatter._style._defaults = {"x": 1}  # type: ignore[attr-defined]
    assert line_renderer(formatter) is None


# -- the listener, lane on and off --------------------------------------------------------


class _Channel:
    scoreboard = None


class Mutate(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = f"[filtered] {record.msg}"
        return record.levelno != 33


def _sinks(directory: Path) -> Tuple[List[Tuple[str, logging.Handler]], Dict[str, io.StringIO]]:
    streams: Dict[str, io.StringIO] = {}
    sinks: List[Tuple[str, logging.Handler]] = []

    def add(name: str, handler: logging.Handler, formatter: Optional[logging.Formatter]) -> None:
        if formatter is not None:
            handler.setFormatter(formatter)
        sinks.append((name, handler))

    add(
        "text", RotatingFileSink(directory / "text.log", maxBytes=20_000, backupCount=3), TextFormatter(BENCH)
    )
    add("json", RotatingFileSink(directory / "json.log"), JSONFormatter())
    warn = RotatingFileSink(directory / "warn.log", encoding="ascii", errors="backslashreplace")
    warn.setLevel(logging.WARNING)
    add("warn", warn, TextFormatter(ALL_ATTRS, escape_newlines=True))
    streams["stream"] = io.StringIO()
    add("stream", logging.StreamHandler(streams["stream"]), None)
    add("file", logging.FileHandler(directory / "file.log", delay=True), logging.Formatter(BENCH, "%H:%M"))
    add("bad fmt", RotatingFileSink(directory / "bad.log"), TextFormatter("%(msg)d"))  # raises: dropped
    filtered = RotatingFileSink(directory / "filtered.log")
    filtered.addFilter(Mutate())
    add("filtered", filtered, TextFormatter(BENCH))
    # After a filter that changes the record: must see the change.
    streams["after"] = io.StringIO()
    add("after", logging.StreamHandler(streams["after"]), TextFormatter("%(levelname)s %(message)s"))
    return sinks, streams


def _run(directory: Path, fast: bool, items: List[Any]) -> Dict[str, Any]:
    directory.mkdir()
    sinks, streams = _sinks(directory)
    counters = Counters([name for name, _sink in sinks])
    errors: List[str] = []
    for name, sink in sinks:
        sink.handleError = lambda record, name=name: errors.append(name)  # type: ignore[method-assign, misc]
    listener = Listener(
        Backlog(1, 1),
        sinks,
        counters,
        Reporter(),
        dispatch_lock=threads.DispatchLock(),
        channel=_Channel(),  # type: ignore[arg-type]
    )
    listener.FAST_LANE = fast
    if fast:
        plan = listener._plan()
        assert plan is not None
        lanes = {name: lane is not None for name, _sink, lane in plan}
        assert lanes == {
            "text": True,
            "json": True,
            "warn": True,
            "stream": True,
            "file": True,
            "bad fmt": True,
            "filtered": False,
            "after": False,
        }
    for start in range(0, len(items), 50):
        listener.dispatch_batch(items[start : start + 50])
    for _name, sink in sinks:
        sink.close()
    files = {path.name: path.read_bytes() for path in sorted(directory.iterdir())}
    return {
        "files": files,
        "streams": {name: stream.getvalue() for name, stream in streams.items()},
        "written": counters.written,
        "failed": counters.sink_failed,
        "errors": sorted(errors),
        "dropped": {name: getattr(sink, "dropped", 0) for name, sink in sinks},
        "received": counters.received,
        "bad": counters.bad_records,
        "drops": counters.dropped_by_level,
    }


def test_the_listener_writes_the_same_bytes_with_and_without_the_lane(tmp_path: Path) -> None:
    """The listener writes the same bytes, counts and drops with the fast lane as without it."""
    items: List[Any] = [(RECORD, PID, 1, seq, payload) for seq, payload in enumerate(PAYLOADS * 3)]
    # The hub's own records and payloads encode() never writes take the slow path.
    summary = framing.encode_drops({"INFO": 3})
    odd = list(wire.decode_fields(PAYLOADS[0]))
    odd[wire.Field.EXCEPTION] = 42  # no exception field encode() writes
    items += [
        (DROPS, PID, 1, framing.NO_SEQ, summary),
        (RECORD, PID, 1, len(items), b"not a record"),
        (RECORD, PID, 1, len(items) + 1, pack_fields(tuple(odd))),
    ]
    slow = _run(tmp_path / "slow", False, items)
    fast = _run(tmp_path / "fast", True, items)
    assert slow["files"].keys() == fast["files"].keys()
    for name in slow["files"]:
        assert fast["files"][name] == slow["files"][name], name
    assert fast == slow
    assert len(slow["files"]) > 6  # the text sink rotated
    assert slow["dropped"]["bad fmt"] == slow["written"]["bad fmt"] > 0
    assert slow["drops"] == {"INFO": 3}
    assert slow["bad"] == 2
