"""Bad input from the application, logged in this process through a real hub.

Every case ends at the hub's sinks: a collecting sink (the record as the
listener hands it over), a text file and a JSON file (both as the project's
file sink is configured: UTF-8, ``backslashreplace``). Each JSON line must be
valid JSON (no NaN or Infinity either) and one line per record.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import socket
import threading
import time
import types
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest

import forklog
from forklog import _wire as wire
from forklog._master.frame_reader import FrameReader
from forklog._master.sinks import RotatingFileSink
from forklog._wire import framing
from forklog._wire.scoreboard import Scoreboard
from forklog._worker import channel as transport
from tests.support import Bad, Collect, Recursive, wait_for

LOGGER = "forklog.tests.bad_input"
MiB = 1 << 20


class NotAString:
    """An object whose __str__ returns something that is not a string."""

    def __str__(self) -> Any:
        return 5  # noqa: PLE0307 - the point


def _reject_constant(name: str) -> Any:
    raise ValueError(f"not JSON: {name}")


def own_logger(name: str) -> logging.Logger:
    """A logger outside logging's registry, so pytest adds no handler of its own to it."""
    logger = logging.Logger(name, logging.DEBUG)
    logger.propagate = False
    return logger


@dataclasses.dataclass
class Arrived:
    """What the sinks got: the records, the text file's lines, the JSON file's objects."""

    records: List[logging.LogRecord]
    text: List[str]
    text_bytes: bytes
    json: List[Dict[str, Any]]
    stats: forklog.HubStats

    def messages(self) -> List[str]:
        return [record.getMessage() for record in self.records]


class Bench:
    """A started hub with a collecting, a text and a JSON sink, and a logger of the test's own."""

    def __init__(self, directory: Path, **hub_options: Any) -> None:
        self.collect = Collect()
        self.text_path = directory / "text.log"
        self.json_path = directory / "json.log"
        text = RotatingFileSink(self.text_path, maxBytes=0, encoding="utf-8", errors="backslashreplace")
        text.setFormatter(forklog.TextFormatter("%(levelname)s %(name)s %(message)s"))
        as_json = RotatingFileSink(self.json_path, maxBytes=0, encoding="utf-8", errors="backslashreplace")
        as_json.setFormatter(forklog.JSONFormatter())
        self.hub = forklog.Hub([("collect", self.collect), ("text", text), ("json", as_json)], **hub_options)
        self.hub.start()
        self.handler = self.hub.handler()
        self.logger = own_logger(LOGGER)
        self.logger.addHandler(self.handler)

    def mine(self) -> List[logging.LogRecord]:
        return [record for record in self.collect.records if record.name == LOGGER]

    def finish(self, expected: int, timeout: float = 20.0) -> Arrived:
        """Wait for ``expected`` records of the test's logger, stop the hub, read the files."""
        wait_for(lambda: len(self.mine()) >= expected, timeout, f"{expected} records at the sink")
        self.close()
        stats = self.hub.stop(timeout=10)
        assert stats is not None
        records = self.mine()
        assert len(records) == expected, [r.getMessage()[:200] for r in records]
        raw = self.text_path.read_bytes()
        text = [
            line
            for line in raw.decode("utf-8").split("\n")
            if line.startswith(("DEBUG", "INFO", "WARN", "ERR"))
        ]
        objects = []
        for line in self.json_path.read_text(encoding="utf-8").split("\n"):
            if line:
                obj = json.loads(line, parse_constant=_reject_constant)  # NaN is not JSON
                assert isinstance(obj, dict)
                if obj["logger"] == LOGGER:
                    objects.append(obj)
        assert len(text) == expected, text
        assert len(objects) == expected, objects
        assert stats.sink_errors == {"collect": 0, "text": 0, "json": 0}, stats
        return Arrived(records, text, raw, objects, stats)

    def close(self) -> None:
        self.logger.removeHandler(self.handler)


@pytest.fixture
def bench(tmp_path: Path) -> Iterator[Bench]:
    bench = Bench(tmp_path)
    yield bench
    bench.close()
    bench.hub.stop(timeout=5)


def test_unpicklable_args_and_extras_arrive_as_reprs(bench: Bench) -> None:
    """A lock arg, and a socket, a lambda, a generator as extras, arrive as repr() text; plain data stays."""
    lock = threading.Lock()
    with socket.socket() as sock:
        bench.logger.info(
            "lock=%s",
            lock,
            extra={
                "conn": sock,
                "fn": lambda: 1,
                "gen": (n for n in range(3)),
                "user": {"id": 7, "tags": ["a"]},
            },
        )
    arrived = bench.finish(1)
    (record,) = arrived.records
    assert record.getMessage().startswith("lock=<unlocked _thread.lock object at 0x")
    assert record.__dict__["conn"].startswith("<socket.socket")
    assert record.__dict__["fn"].startswith("<function test_unpicklable_args_and_extras_arrive_as_reprs.")
    assert record.__dict__["gen"].startswith("<generator object")
    assert record.__dict__["user"] == {"id": 7, "tags": ["a"]}
    assert arrived.text[0].startswith(f"INFO {LOGGER} lock=<unlocked _thread.lock object at 0x")
    (obj,) = arrived.json
    assert obj["message"] == record.getMessage()
    assert obj["conn"].startswith("<socket.socket") and obj["user"] == {"id": 7, "tags": ["a"]}


def test_a_field_the_wire_cannot_carry_keeps_the_rest_of_the_record(bench: Bench) -> None:
    """A filter puts a lock in taskName or an object in lineno: the record arrives, naming the failure."""

    def spoil(record: logging.LogRecord) -> bool:
        if record.msg.startswith("order"):
            record.__dict__["taskName"] = threading.Lock()
        else:
            record.__dict__["lineno"] = types.SimpleNamespace()
        return True

    bench.logger.addFilter(spoil)
    try:
        bench.logger.warning("order %d shipped", 12, extra={"order": 12})
        bench.logger.warning("line %s", "unknown")
    finally:
        bench.logger.removeFilter(spoil)
    arrived = bench.finish(2)
    assert arrived.messages() == ["order 12 shipped", "line unknown"]
    first, second = arrived.records
    assert (first.levelname, first.__dict__["order"]) == ("WARNING", 12)
    assert first.__dict__["forklog_encode_error"] == "TypeError: taskName is a lock, not text"
    assert second.lineno == 0
    assert second.__dict__["forklog_encode_error"].startswith("TypeError: int() argument must be")
    assert [obj["message"] for obj in arrived.json] == ["order 12 shipped", "line unknown"]
    assert arrived.json[0]["forklog_encode_error"] == "TypeError: taskName is a lock, not text"


def test_a_ten_mib_message_arrives_truncated_with_a_marker(tmp_path: Path) -> None:
    """Under the default max_record_bytes (1 MiB) a 10 MiB message, ASCII or not, arrives cut, marked."""
    # The record is about as big as the pipe: give the receiver time to drain it while it is written.
    bench = Bench(tmp_path, keep_wait=10.0)
    try:
        ascii_text = "x" * (10 * MiB)
        accented = "é" * (5 * MiB)  # 10 MiB of UTF-8
        bench.logger.info(ascii_text)
        bench.logger.info("%s", accented)
        arrived = bench.finish(2)
    finally:
        bench.close()
        bench.hub.stop(timeout=5)
    for record, original, char in zip(arrived.records, (ascii_text, accented), "xé", strict=False):
        message = record.getMessage()
        kept, marker = message.split(" [forklog: truncated ", 1)
        assert marker.endswith(" characters]")
        assert kept == char * len(kept)
        assert len(kept) + int(marker.split()[0]) == len(original)
        assert 0.9 * MiB <= len(kept.encode("utf-8")) <= MiB
    assert arrived.stats.incomplete_by_process == {} and arrived.stats.dropped == 0
    assert all(line.endswith("characters]") for line in arrived.text)
    assert [obj["message"] for obj in arrived.json] == arrived.messages()


def test_lone_surrogates_arrive_and_the_files_write_them_escaped(bench: Bench) -> None:
    """Lone surrogates in msg, args and extras arrive intact; the text file has them backslash-escaped."""
    bench.logger.info("bad \udcff text %s", "\ud800", extra={"field": "\udfff"})
    arrived = bench.finish(1)
    (record,) = arrived.records
    assert record.getMessage() == "bad \udcff text \ud800"
    assert record.__dict__["field"] == "\udfff"
    assert f"INFO {LOGGER} bad \\udcff text \\ud800\n".encode() in arrived.text_bytes
    assert arrived.json[0]["message"] == "bad \udcff text \ud800" and arrived.json[0]["field"] == "\udfff"


def test_invalid_utf8_bytes_arrive_as_their_repr(bench: Bench) -> None:
    """Bytes that are not UTF-8, as msg or as an arg, arrive as their repr."""
    bench.logger.info(b"\xff\xfe raw")
    bench.logger.info("payload %s", b"\xc3\x28")
    bench.logger.info("%r", b"\x80")
    arrived = bench.finish(3)
    expected = ["b'\\xff\\xfe raw'", "payload b'\\xc3('", "b'\\x80'"]
    assert arrived.messages() == expected
    assert [line.split(" ", 2)[2] for line in arrived.text] == expected
    assert [obj["message"] for obj in arrived.json] == expected


def test_a_format_mismatch_arrives_with_the_format_the_args_and_the_error(bench: Bench) -> None:
    """A %-mismatch yields a record keeping the format string and each arg's repr, and naming the error."""
    bench.logger.info("%d items for %s", "many")  # noqa: PLE1206 - the point
    bench.logger.info("one %s", "a", "b")  # noqa: PLE1205 - the point
    bench.logger.info("%(user)s logged in", {"name": "ann"})
    bench.logger.info("%s and %s", 1, Bad())
    arrived = bench.finish(4)
    expected = [
        "%d items for %s % ('many',) [forklog: could not merge args: TypeError: ",
        "one %s % ('a', 'b') [forklog: could not merge args: TypeError: not all arguments converted",
        "%(user)s logged in % {'name': 'ann'} [forklog: could not merge args: KeyError: 'user']",
        "%s and %s % (1, <unrepresentable Bad object>) [forklog: could not merge args: RuntimeError: no str]",
    ]
    for message, start in zip(arrived.messages(), expected, strict=False):
        assert message.startswith(start), message
    assert [obj["message"] for obj in arrived.json] == arrived.messages()
    assert [line.split(" ", 2)[2] for line in arrived.text] == arrived.messages()


def test_a_raising_or_recursing_str_or_repr_yields_a_record_naming_the_failure(bench: Bench) -> None:
    """__str__/__repr__ that raise or recurse, in msg, args and extras: each record says what failed."""
    bench.logger.info(Bad())
    bench.logger.info("value %s", Bad())
    bench.logger.info("value %r", Bad())
    bench.logger.info(Recursive())
    bench.logger.info("value %s", Recursive(), extra={"obj": Recursive(), "bad": Bad()})
    arrived = bench.finish(5)
    messages = arrived.messages()
    assert (
        messages[0]
        == "<unrepresentable Bad object> % () [forklog: could not merge args: RuntimeError: no str]"
    )
    assert messages[1] == (
        "value %s % (<unrepresentable Bad object>,) [forklog: could not merge args: RuntimeError: no str]"
    )
    assert messages[2] == (
        "value %r % (<unrepresentable Bad object>,) [forklog: could not merge args: RuntimeError: no repr]"
    )
    assert messages[3].startswith(
        "<unrepresentable Recursive object> % () [forklog: could not merge args: Recursion"
    )
    assert messages[4].startswith(
        "value %s % (<unrepresentable Recursive object>,) [forklog: could not merge args:"
    )
    assert arrived.records[4].__dict__["obj"] == "<unrepresentable Recursive object>"
    assert arrived.records[4].__dict__["bad"] == "<unrepresentable Bad object>"
    assert [obj["message"] for obj in arrived.json] == messages
    assert arrived.json[4]["bad"] == "<unrepresentable Bad object>"


def test_a_non_string_msg_arrives_as_its_str(bench: Bench) -> None:
    """A dict, an int, None and an object as msg arrive as their str(); a bad __str__ is named."""
    bench.logger.info({"a": 1})
    bench.logger.info(42)
    bench.logger.info(None)
    bench.logger.info(ValueError("as msg"))
    bench.logger.info(NotAString())
    bench.logger.info(7, "extra arg")
    arrived = bench.finish(6)
    messages = arrived.messages()
    assert messages[:4] == ["{'a': 1}", "42", "None", "as msg"]
    assert messages[4].startswith("<tests.unit.test_bad_input.NotAString object at 0x")
    assert "could not merge args: TypeError: __str__ returned non-string" in messages[4]
    assert messages[5].startswith("7 % ('extra arg',) [forklog: could not merge args: TypeError:")
    assert [obj["message"] for obj in arrived.json] == messages


def test_an_extra_with_a_thousand_keys_arrives_whole(bench: Bench) -> None:
    """A thousand extras, a dict of a thousand keys, odd keys, NaN: all arrive; the JSON stays JSON."""
    fields: Dict[Any, Any] = {f"k{i}": i for i in range(1000)}
    fields["table"] = {f"row{i}": [i, str(i)] for i in range(1000)}
    fields[7] = "int key"
    fields[(1, 2)] = "tuple key"
    fields["ratio"] = float("nan")
    fields["limit"] = float("-inf")
    bench.logger.info("wide", extra=fields)
    arrived = bench.finish(1)
    (record,) = arrived.records
    assert all(record.__dict__[f"k{i}"] == i for i in range(1000))
    assert record.__dict__["table"] == {f"row{i}": [i, str(i)] for i in range(1000)}
    assert (record.__dict__["7"], record.__dict__["(1, 2)"]) == ("int key", "tuple key")
    (obj,) = arrived.json
    assert all(obj[f"k{i}"] == i for i in range(1000)) and len(obj["table"]) == 1000
    assert (obj["7"], obj["(1, 2)"], obj["ratio"], obj["limit"]) == ("int key", "tuple key", "nan", "-inf")
    assert arrived.text == [f"INFO {LOGGER} wide"]


def test_a_signal_that_raises_during_a_log_call_is_not_swallowed(bench: Bench) -> None:
    """SystemExit raised by a signal handler inside a log call reaches the program; logging goes on."""

    def exit_now(signum: int, frame: Optional[types.FrameType]) -> None:
        raise SystemExit(3)

    class SignalsWhileFormatted:
        def __str__(self) -> str:
            signal.raise_signal(signal.SIGUSR1)  # the handler runs here, inside the log call
            return "formatted"

    previous = signal.signal(signal.SIGUSR1, exit_now)
    try:
        with pytest.raises(SystemExit):
            bench.logger.info("value %s", SignalsWhileFormatted())
    finally:
        signal.signal(signal.SIGUSR1, previous)
    bench.logger.info("after")
    arrived = bench.finish(1)
    assert arrived.messages() == ["after"]


def writer_channel(hub: forklog.Hub) -> transport.Channel:
    """A channel registered with the hub, with a pipe and a slot of its own, as a spawned child gets it."""
    board = hub.queue.scoreboard
    assert board is not None
    return transport.Channel._attach(os.dup(hub.queue.register_fd), Scoreboard(slots=1, fd=os.dup(board.fd)))


def test_a_signal_handler_logging_inside_a_publish_does_not_rewind_the_scoreboard(tmp_path: Path) -> None:
    """A handler logs while the interrupted call publishes: both arrive, the number never goes back."""
    collect = Collect()
    with forklog.Hub([("collect", collect)]) as hub:
        channel = writer_channel(hub)
        assert channel.board is not None
        board = channel.board
        real_publish = board.publish
        published: List[int] = []

        def publish(index: int, numbered: int) -> None:
            if not published:  # the first publish: a signal arrives right here
                published.append(-1)
                signal.raise_signal(signal.SIGUSR1)
            published.append(numbered)
            real_publish(index, numbered)

        board.publish = publish  # type: ignore[method-assign]
        logger = own_logger(LOGGER + ".publish")
        handler = forklog.ForkHandler(channel)
        logger.addHandler(handler)

        def in_handler(signum: int, frame: Optional[types.FrameType]) -> None:
            logger.error("from the handler %s", "h" * 9000)  # several frames: publishes its number too

        previous = signal.signal(signal.SIGUSR1, in_handler)
        try:
            logger.error("interrupted %s", "i" * 9000)
        finally:
            signal.signal(signal.SIGUSR1, previous)
            logger.removeHandler(handler)
        wait_for(lambda: len(collect.records) >= 2, 10, "both records")
        claimed = {slot: numbered for slot, _boot, numbered in board.claimed().get(os.getpid(), [])}
        assert claimed == {channel._slot: 2}, (claimed, published)
        assert sorted(r.getMessage()[:14] for r in collect.records) == ["from the handl", "interrupted ii"]
        channel.close()


def test_drops_of_records_with_odd_level_names_are_reported() -> None:
    """Records whose levelname a filter made None or an int, dropped on a full pipe, are reported by name."""
    channel = transport.Channel(pipe_size=4096)  # nobody reads it: it stays full
    try:
        logger = own_logger(LOGGER + ".levels")
        logger.addHandler(forklog.ForkHandler(channel))
        while not channel.dropped:
            logger.info("filler %s", "f" * 500)

        def rename(record: logging.LogRecord) -> bool:
            record.levelname = record.msg
            return True

        logger.addFilter(rename)
        logger.info(None)
        logger.info(5)
        assert channel.dropped == {"INFO": 1, "UNKNOWN": 1, "5": 1}
        # The reader catches up: the next record goes out, and the summary right behind it.
        assert channel.read_fd is not None
        reader = FrameReader()
        while framing.pipe_backlog(channel.read_fd):
            list(reader.feed(os.read(channel.read_fd, 1 << 16)))
        logger.removeFilter(rename)
        logger.info("after")
        after, report = reader.feed(os.read(channel.read_fd, 1 << 16))
        assert wire.decode(after[4], after[1]).getMessage() == "after"
        assert framing.decode_drops(report[4]) == {"INFO": 1, "UNKNOWN": 1, "5": 1}
        assert channel.dropped == {}
    finally:
        channel.close()


def test_a_lock_holder_that_never_returns_does_not_hang_a_log_call() -> None:
    """A thread frozen inside the counters' section (a daemon thread at exit) delays a drop once, briefly."""
    channel = transport.Channel(pipe_size=4096)  # nobody reads it: it stays full
    logger = own_logger(LOGGER + ".frozen")
    logger.addHandler(forklog.ForkHandler(channel))
    holding, thaw = threading.Event(), threading.Event()

    def frozen() -> None:
        with channel._lock:  # as a daemon thread stopped by the interpreter's exit would hold it
            holding.set()
            thaw.wait(60)

    holder = threading.Thread(target=frozen, daemon=True)
    try:
        while not channel.dropped:
            logger.info("filler %s", "f" * 500)
        holder.start()
        assert holding.wait(10)
        took: List[float] = []

        def drop_twice() -> None:
            for _ in range(2):
                started = time.monotonic()
                logger.info("dropped while the lock is held")
                took.append(time.monotonic() - started)

        caller = threading.Thread(target=drop_twice)
        caller.start()
        caller.join(10)
        assert not caller.is_alive(), "the log call hung on the frozen thread's lock"
        assert took[0] < 2.0 and took[1] < 0.1, took
        assert channel.dropped == {"INFO": 3}
    finally:
        thaw.set()
        if holder.is_alive():
            holder.join(10)
        channel.close()
