"""Lines made in the emitting processes are the lines the master would have made.

When every sink is a file or a stream the fast lane writes, workers send
their records' lines (``wire.encode_lines``) instead of fields. The line a
worker makes from a ``LogRecord`` must be the line the master makes from the
same record's fields, byte for byte, for every formatter and record the
fast lane's tests use; and a hub in that mode must write what a hub without
it writes, in order, with every record counted.
"""

from __future__ import annotations

import io
import json
import logging
import multiprocessing
import os
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import pytest

import forklog
from forklog import JSONFormatter, RotatingFileSink, TextFormatter
from forklog import _wire as wire
from forklog._master.line_writer import LINES_BYTE
from forklog._renderers import line_renderer, record_renderer
from forklog._wire import framing, tracebacks
from forklog._worker import channel as transport
from tests.support import wait_for

from .test_fast_lane import FORMATTERS, PID, RECORDS

BENCH = "%(asctime)s [%(levelname)s] %(name)s %(process)d %(threadName)s - %(message)s"


def _worker_lines(kinds: List[str], record: logging.LogRecord) -> Optional[List[str]]:
    renderers = [record_renderer(FORMATTERS[kind]()) for kind in kinds]
    assert all(render is not None for render in renderers)
    with_traceback = "json" not in kinds
    payload = wire.encode_lines(record, renderers, PID, with_traceback)  # type: ignore[arg-type]
    if payload is None:
        return None
    assert payload[:1] == LINES_BYTE
    levelno, created, name, lines = wire.decode_lines(payload)
    assert (levelno, created, name) == (record.levelno, record.created, record.name)
    return [line.decode("utf-8") for line in lines]


def _master_line(kind: str, record: logging.LogRecord) -> str:
    render = line_renderer(FORMATTERS[kind]())
    assert render is not None
    fields = wire.decode_fields(wire.encode(record))
    return render(fields, PID, wire.exception_text(fields[14]))


#: Formats that name %(msg)s or %(args)s: the fields carry the merged message
#: only, so a worker's line would differ, and their records travel as fields.
UNMERGED = {"every attribute", "every attribute, escaped"}


@pytest.mark.parametrize("kind", sorted(set(FORMATTERS) - UNMERGED))
def test_a_worker_makes_the_line_the_master_would(kind: str) -> None:
    """A worker's line for a record is byte for byte the line the master's formatter makes."""
    made = with_traceback = 0
    for record in RECORDS:
        lines = _worker_lines([kind], record)
        if lines is None:
            continue
        made += 1
        assert lines == [_master_line(kind, record)], record.msg
        with_traceback += bool(record.exc_info)
    assert made > len(RECORDS) // 2  # most records take this path
    # Records with an exception take it too, but for JSON (the traceback is inside the line).
    assert (with_traceback > 0) == (kind != "json")


def test_several_formatters_give_one_line_each_in_order() -> None:
    """With several distinct formatters a payload carries one line each, in the hub's order."""
    kinds = ["bench", "json", "stdlib datefmt"]
    made = 0
    for record in RECORDS:
        lines = _worker_lines(kinds, record)
        if lines is not None:
            made += 1
            assert lines == [_master_line(kind, record) for kind in kinds]
    # Exactly the records each formatter alone makes a line of (JSON holds a traceback inside).
    alone = sum(all(_worker_lines([kind], record) is not None for kind in kinds) for record in RECORDS)
    assert alone > len(RECORDS) // 2
    assert made == alone, f"no lines made for {alone - made} of {alone} records"


def _record(msg: str = "hello %s", args: Tuple[Any, ...] = ("world",), **attrs: Any) -> logging.LogRecord:
    record = logging.LogRecord("lines", logging.INFO, __file__, 1, msg, args, None)
    record.__dict__.update(attrs)
    return record


@pytest.mark.parametrize(
    "record",
    [
        pytest.param(_record(exc_text="Traceback ..."), id="exc_text"),
        pytest.param(_record(stack_info="Stack (most recent call last): ..."), id="stack"),
        pytest.param(_record(exc_info=(None, None, None)), id="exc_info outside an except block"),
        pytest.param(_record(levelno="20"), id="a level that is not an int"),
        pytest.param(_record(created=12), id="a time that is not a float"),
        pytest.param(_record(name=object()), id="a name that is not a str"),
        pytest.param(_record("lone \ud800 surrogate", ()), id="not UTF-8"),
        pytest.param(_record(lineno=None), id="a field the format cannot take"),
    ],
)
def test_records_a_worker_cannot_make_lines_of_travel_as_fields(record: logging.LogRecord) -> None:
    """A record the worker cannot make lines of (a stack, odd fields) takes the fields path."""
    render = record_renderer(TextFormatter("%(lineno)d %(message)s"))
    assert render is not None
    assert wire.encode_lines(record, [render], PID, with_traceback=True) is None
    assert wire.decode_fields(wire.encode(record))  # and the fields path takes them


def test_formatters_a_worker_cannot_reproduce_have_no_record_renderer() -> None:
    """A Formatter subclass, a {-style format or an extra in the format: no renderer, the record travels."""

    class Custom(logging.Formatter):
        pass

    assert record_renderer(Custom("%(message)s")) is None
    assert record_renderer(logging.Formatter("{message}", style="{")) is None
    assert record_renderer(logging.Formatter("%(user)s %(message)s")) is None  # an extra
    assert record_renderer(logging.Formatter("%(msg)s")) is None  # the unmerged message
    for kind in UNMERGED:
        assert record_renderer(FORMATTERS[kind]()) is None
    assert record_renderer(JSONFormatter()) is not None


def test_a_damaged_lines_payload_is_refused() -> None:
    """A lines payload cut or with lengths that do not add up raises ValueError, never a wrong line."""
    render = record_renderer(TextFormatter(BENCH))
    assert render is not None
    good = wire.encode_lines(_record(), [render, render], PID)
    assert good is not None
    lengths_end = wire.LINES_HEAD_SIZE + len("lines") + 4
    for bad in (
        good[:5],  # a cut head
        good[: lengths_end + 2],  # the first line is longer than what is left
        LINES_BYTE + b"\x00" + good[2:],  # no line at all
        good[: lengths_end - 4] + b"\xff\xff\xff\x7f" + good[lengths_end:],  # a length past the end
    ):
        with pytest.raises(ValueError):
            wire.decode_lines(bad)


# -- a hub in the mode ------------------------------------------------------------------


def _sinks(tmp: Path) -> List[logging.Handler]:
    text = RotatingFileSink(tmp / "text.log", maxBytes=1 << 30, backupCount=1)
    text.setFormatter(TextFormatter(BENCH))
    as_json = RotatingFileSink(tmp / "json.log", maxBytes=1 << 30, backupCount=1)
    as_json.setFormatter(JSONFormatter())
    warnings = RotatingFileSink(tmp / "warnings.log", maxBytes=1 << 30, backupCount=1)
    warnings.setFormatter(TextFormatter(BENCH))
    warnings.setLevel(logging.WARNING)
    return [text, as_json, warnings]


def _log_and_keep(queue: transport.Channel, out: str, count: int) -> None:
    """In a child: log ``count`` records (every 7th with a traceback), keep what each sink should get."""
    forklog.init_worker(queue, level=logging.DEBUG)
    text, as_json = TextFormatter(BENCH), JSONFormatter()
    expected: Dict[str, List[str]] = {"text": [], "json": [], "warnings": []}

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.exc_info:
                expected["text"].append(f"TRACEBACK {record.getMessage()}")
                return
            record.process = os.getpid()
            expected["text"].append(text.format(record))
            expected["json"].append(as_json.format(record))
            if record.levelno >= logging.WARNING:
                expected["warnings"].append(text.format(record))

    # Not addHandler: the test's eye is not the app configuring logging (forklog._worker.fallback).
    logging.getLogger("lines.child").handlers.append(Keep())
    # How many records left as lines (the channel's encode_lines made them), not as fields.
    made = [0]
    encode = wire.encode_lines

    def counting(*args: Any, **kwargs: Any) -> Optional[bytes]:
        payload = encode(*args, **kwargs)
        made[0] += payload is not None
        return payload

    wire.encode_lines = counting
    log = logging.getLogger("lines.child")
    for i in range(count):
        if i % 7 == 6:
            try:
                raise ValueError(f"bad {i}")
            except ValueError:
                log.exception("failed %d", i)
        else:
            level = (logging.INFO, logging.WARNING, logging.DEBUG)[i % 3]
            log.log(level, "record %d \u00e9 %s", i, "x" * (i % 50), extra={"user": f"u{i}"})
    wire.encode_lines = encode
    Path(out).write_text(json.dumps({**expected, "modes": len(queue.line_formatters), "lines": made[0]}))


def _lines_of(path: Path) -> List[str]:
    return path.read_text(encoding="utf-8").splitlines()


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_a_hub_writes_the_workers_lines_in_order(tmp_path: Path, method: str) -> None:
    """Children's lines reach each sink whole, once, in per-process order, under each start method."""
    sinks = _sinks(tmp_path)
    hub = forklog.Hub(sinks).start()
    try:
        assert len(hub.queue.line_formatters) == 2  # two distinct formatters for three sinks
        context: Any = multiprocessing.get_context(method)
        out = tmp_path / "expected.json"
        child = context.Process(target=_log_and_keep, args=(hub.queue, str(out), 700))
        child.start()
        child.join(60)
        assert child.exitcode == 0
        hub.process_exited(child.pid)
    finally:
        stats = hub.stop(timeout=30)
    assert stats is not None
    expected = json.loads(out.read_text())
    assert expected["modes"] == 2  # two formatters, under spawn too
    # Every record but those with a traceback (JSON holds it inside the line) left the child as lines.
    assert expected["lines"] == 600, f"no lines made for {600 - expected['lines']} of 600 records"
    text = _lines_of(tmp_path / "text.log")
    records = [line for line in text if line[:4].isdigit()]
    assert len(records) == 700
    for got, want in zip(records, expected["text"], strict=False):
        if want.startswith("TRACEBACK "):
            assert got.endswith(want[len("TRACEBACK ") :])
        else:
            assert got == want
    as_json = _lines_of(tmp_path / "json.log")
    assert len(as_json) == 700
    assert [line for line in as_json if '"exc_info"' not in line] == expected["json"]
    warned = [line for line in _lines_of(tmp_path / "warnings.log") if line[:4].isdigit()]
    assert [line for line in warned if "[WARNING]" in line] == expected["warnings"]
    assert len(warned) == len(expected["warnings"]) + 100  # and the 100 with a traceback
    assert sorted(stats.written.values()) == sorted([700, 700, len(warned)])
    assert stats.lost == 0 and stats.dropped == 0 and stats.bad_records == 0


def _log_exceptions(queue: transport.Channel, out: str, count: int) -> None:
    """In a child: log ``count`` records, every 3rd with a traceback; keep the text each should have."""
    forklog.init_worker(queue, level=logging.DEBUG)
    text = TextFormatter(BENCH)
    expected: List[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            record.process = os.getpid()
            exc_info, record.exc_info = record.exc_info, None
            line = text.format(record)
            record.exc_info, record.exc_text = exc_info, None  # for the hub's handler, on root, next
            if exc_info and exc_info[1] is not None:
                line += "\n" + tracebacks.render(tracebacks.extract(exc_info[1]) or [])
            expected.append(line)

    logging.getLogger("lines.child").handlers.append(Keep())
    log = logging.getLogger("lines.child")

    def fail(depth: int) -> None:
        if depth:
            fail(depth - 1)
        raise KeyError(f"missing \u00e9 {depth}")

    for i in range(count):
        if i % 3 == 2:
            try:
                try:
                    fail(i % 4)
                except KeyError as exc:
                    raise RuntimeError("wrapped") from exc
            except RuntimeError:
                log.exception("failed %d\nsecond line", i)
        else:
            log.info("record %d", i)
    Path(out).write_text(json.dumps({"expected": expected, "with_traceback": queue._with_traceback}))


def test_tracebacks_follow_the_workers_lines(tmp_path: Path) -> None:
    """A record's traceback, sent as frames, is written after its line in every sink."""
    sink = RotatingFileSink(tmp_path / "text.log", maxBytes=1 << 30, backupCount=1)
    sink.setFormatter(TextFormatter(BENCH))
    console = logging.StreamHandler(io.StringIO())
    console.setFormatter(logging.Formatter(BENCH))
    hub = forklog.Hub([sink, console]).start()
    out = tmp_path / "expected.json"
    try:
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                _log_exceptions(hub.queue, str(out), 300)
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert status == 0
        hub.process_exited(pid)
    finally:
        stats = hub.stop(timeout=30)
    assert stats is not None and stats.lost == 0 and stats.bad_records == 0
    result = json.loads(out.read_text())
    assert result["with_traceback"]  # the child sent frames with its lines
    want = "\n".join(result["expected"]) + "\n"
    assert (tmp_path / "text.log").read_text(encoding="utf-8") == want
    assert console.stream.getvalue() == want


def test_a_sink_whose_formatter_changed_after_start_gets_records_made_of_the_line(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """A sink whose formatter changed after start gets records made of the line, reported once."""
    sink = RotatingFileSink(tmp_path / "text.log", maxBytes=1 << 30, backupCount=1)
    sink.setFormatter(TextFormatter(BENCH))
    hub = forklog.Hub([sink]).start()
    try:
        sink.setFormatter(TextFormatter("NEW %(levelname)s %(message)s"))
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                forklog.init_worker(hub.queue)
                logging.getLogger("stale").warning("made by the worker %d", 1)
                code = 0
            finally:
                os._exit(code)
        assert os.waitpid(pid, 0)[1] == 0
        hub.process_exited(pid)
    finally:
        stats = hub.stop(timeout=30)
    assert stats is not None and stats.written == {"rotatingfilesink": 1} and stats.lost == 0
    (line,) = _lines_of(tmp_path / "text.log")
    # The new format, around the line the worker made with the old one.
    assert line.startswith("NEW WARNING ")
    assert line.endswith(f" [WARNING] stale {pid} MainThread - made by the worker 1")
    assert "formatter or filters changed after the hub started" in capfd.readouterr().err


def test_a_damaged_lines_payload_in_a_batch_is_counted_and_the_rest_written(tmp_path: Path) -> None:
    """A damaged lines payload in a batch is counted as bad; the records around it are written."""
    from forklog._master import scheduling as threads
    from forklog._master.backlog import Backlog
    from forklog._master.counters import Counters
    from forklog._master.listener import Listener
    from forklog._stderr import Reporter

    sink = RotatingFileSink(tmp_path / "text.log", maxBytes=1 << 30, backupCount=1)
    sink.setFormatter(TextFormatter("%(levelname)s %(message)s"))
    counters = Counters(["file"])
    listener = Listener(
        Backlog(10, 1 << 20),
        [("file", sink)],
        counters,
        Reporter(),
        dispatch_lock=threads.DispatchLock(),
        channel=None,  # type: ignore[arg-type]
    )
    formatter = sink.formatter
    assert formatter is not None
    listener.lines.use({"file": (0, formatter)})
    render = record_renderer(formatter)
    assert render is not None
    payloads = [wire.encode_lines(_record("line %d", (i,)), [render], PID) for i in range(4)]
    assert all(payloads)
    damaged = payloads[1][:3]  # type: ignore[index]
    whole = framing.FIRST | framing.LAST
    batch = [(whole, PID, 1, seq, p) for seq, p in enumerate([payloads[0], damaged, payloads[2]])]
    batch.append((whole, PID, 1, 3, wire.encode(_record("fields %d", (3,)))))  # in its place
    batch.append((whole, PID, 1, 4, payloads[3]))
    listener.dispatch_batch(batch)  # type: ignore[arg-type]
    sink.flush()
    sink.close()
    assert _lines_of(tmp_path / "text.log") == ["INFO line 0", "INFO line 2", "INFO fields 3", "INFO line 3"]
    assert counters.bad_records == 1 and counters.received == 5 and counters.written == {"file": 4}


class _Keep(logging.Handler):
    """A handler of unknown kind: the hub gives it a buffer and a thread (like syslog), then it waits."""

    def __init__(self) -> None:
        super().__init__()
        self.records: List[logging.LogRecord] = []
        self.gate = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.gate.wait(30)
        self.records.append(record)


def _log_in_two_rounds(queue: transport.Channel, out: str, count: int) -> None:
    """Log until the master says the fields are not wanted (the sink is full), then ``count`` more."""
    forklog.init_worker(queue)
    log = logging.getLogger("fields.child")
    first = 0
    deadline = time.monotonic() + 20
    while queue._want_fields() and time.monotonic() < deadline:
        log.info("first %d", first, extra={"user": f"u{first}"})
        first += 1
        time.sleep(0.001)
    assert not queue._want_fields(), "the master never said the fields are not wanted"
    for i in range(count):
        log.info("second %d", i)
    Path(out).write_text(str(first))


def test_fields_travel_with_the_lines_while_a_buffered_sink_takes_records(tmp_path: Path) -> None:
    """File + a syslog-like sink: lines for the file, fields for the other, none once it refuses."""
    sink = RotatingFileSink(tmp_path / "text.log", maxBytes=1 << 30, backupCount=1)
    sink.setFormatter(TextFormatter("%(levelname)s %(message)s"))
    keep = _Keep()
    hub = forklog.Hub([("file", sink), ("keep", keep)]).start()
    slow = dict(hub.sinks)["keep"]
    slow.capacity = 50  # type: ignore[attr-defined]
    assert hub.queue.line_formatters and hub.queue.fields_with_lines
    context: Any = multiprocessing.get_context("fork")
    out = tmp_path / "first"
    child = context.Process(target=_log_in_two_rounds, args=(hub.queue, str(out), 200))
    try:
        child.start()
        child.join(60)
        assert child.exitcode == 0
        hub.process_exited(child.pid)
        first = int(out.read_text())
        total = first + 200
        wait_for(lambda: hub.stats().written["file"] >= total, 10, "the file to get every record")
        keep.gate.set()
    finally:
        stats = hub.stop(timeout=10)
    assert stats is not None and stats.lost == 0
    text = _lines_of(tmp_path / "text.log")
    words = [line.split(" ", 2)[1] for line in text if not line.startswith("WARNING forklog:")]
    assert words == ["first"] * first + ["second"] * 200
    assert any("sink keep could not write" in line for line in text)  # and the drops are reported
    # The sink got whole records (extras too) while it had room; the rest is counted, none silently lost.
    mine = [r for r in keep.records if r.name == "fields.child"]
    assert mine and all(r.getMessage().startswith("first") for r in mine)
    # In order, each once, extras and all (which ones got in depends on when its thread took one out).
    taken = [int(r.user[1:]) for r in mine]  # type: ignore[attr-defined]
    assert taken == sorted(set(taken)) and taken[0] == 0
    # Every record handed to it was delivered or counted; all of the child's among them.
    assert stats.written["keep"] == len(keep.records) + stats.dropped_by_sink["keep"]
    assert stats.written["keep"] - (len(keep.records) - len(mine)) >= total
