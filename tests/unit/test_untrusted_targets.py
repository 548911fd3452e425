"""Target specs from a worker are untrusted (issue 21, items 8 and 11): a real hub, forked children.

The master's stdout and stderr are shared by every writer: a spec asking for
another encoding or error handler must not decide how the master writes them
for the others. Specs are kept per spec, so a worker sending new ones
without end must not grow the master's tables beyond their bound.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
import time
from typing import List, Tuple

import pytest

import forklog
from forklog._master import targets as targets_module
from forklog._master.targets import Credentials, Targets
from forklog._wire.adopted_lines import TargetSpec
from forklog._worker import adoption
from tests.support import Collect, in_child, wait_for

NOBODY = Credentials(65534, frozenset({65534}))


def error_record(message: str) -> logging.LogRecord:
    return logging.makeLogRecord({"msg": message, "levelno": logging.ERROR, "levelname": "ERROR"})


def send_forged(hub: forklog.Hub, specs: List[bytes]) -> None:
    """A compromised worker: one adopted line for each spec, each sent until the pipe takes it."""
    forklog.init_worker(hub.queue)
    for number, spec in enumerate(specs):
        record = error_record(f"forged {number}")
        while not hub.queue.send_text(spec, record, f"forged line {number}", "\n"):
            time.sleep(0.001)
    assert hub.queue.flush(10.0)
    hub.queue.leave(timeout=1.0)


def log_to_stderr(hub: forklog.Hub, name: str, message: str) -> None:
    """A worker: ``message`` through a ``StreamHandler(sys.stderr)`` of its own (adopted), then it leaves."""
    forklog.init_worker(hub.queue)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger(name)
    logger.addHandler(handler)
    assert adoption.adopted(handler) == TargetSpec("stream", "stderr"), "not adopted"
    logger.error(message)
    hub.queue.leave(timeout=1.0)


HOSTILE_STDERR = {
    "undefined": TargetSpec("stream", "stderr", encoding="undefined"),
    "ascii-strict": TargetSpec("stream", "stderr", encoding="ascii", errors="strict"),
    "utf-16": TargetSpec("stream", "stderr", encoding="utf-16"),
    "unicode-escape": TargetSpec("stream", "stderr", "w", "unicode_escape", "ignore"),
    "idna": TargetSpec("stream", "stderr", encoding="idna", errors="strict"),
}


@pytest.mark.parametrize("hostile", list(HOSTILE_STDERR), ids=str)
def test_no_spec_decides_how_the_master_writes_its_stderr(
    capfdbinary: pytest.CaptureFixture[bytes], hostile: str
) -> None:
    """Item 8: a forged ``<stderr>`` spec comes first; another worker's adopted stderr line is written."""
    captured: List[bytes] = []

    def stderr_so_far() -> bytes:
        captured.append(capfdbinary.readouterr().err)
        return b"".join(captured)

    line = "bystander é after the forged stderr"
    with forklog.Hub([Collect()]) as hub:
        in_child(lambda: send_forged(hub, [HOSTILE_STDERR[hostile].to_bytes()]))

        in_child(lambda: log_to_stderr(hub, "bystander", line))
        expected = (line + "\n").encode("utf-8")
        wait_for(lambda: expected in stderr_so_far(), 1.0, "the other worker's stderr line")
        stats = hub.stop(timeout=10)
    assert stats is not None and stats.listener_alive is False
    assert stats.written.get("<stderr>", 0) >= 1


def table_size(targets: Targets) -> Tuple[int, int]:
    """Every entry the master keeps in its targets' tables, and the bytes of their keys, seen from outside."""
    entries = size = 0
    for value in vars(targets).values():
        if isinstance(value, (dict, set)):
            entries += len(value)
            size += sum(len(key) for key in value if isinstance(key, (bytes, str)))
    return entries, size


def rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_endless_new_specs_keep_the_master_within_its_bounds(capfd: pytest.CaptureFixture[str]) -> None:
    """Item 11: 100k distinct specs (stderr variants, refused files), 33 MB in all: tables stay bounded."""
    total, refused_every = 100_000, 10
    padding = "x" * 300

    def spec(number: int) -> bytes:
        if number % refused_every == 0:  # a file the master refuses: the workers run as another user
            return TargetSpec("file", f"/nonexistent/forklog-test/{number:06d}-{padding}.log").to_bytes()
        # A stream target whose other fields differ: each one new bytes for the same <stderr>.
        return TargetSpec("stream", "stderr", when=f"{number:06d}{padding}").to_bytes()

    collect = Collect()
    with forklog.Hub([collect], queue_size=1_000) as hub:
        hub.targets.writer = NOBODY
        in_child(lambda: None)  # the fork machinery's first-time costs, before the baseline
        gc.collect()
        before = rss()
        received = hub.stats().enqueued
        in_child(lambda: send_forged(hub, [spec(number) for number in range(total)]))
        wait_for(lambda: hub.stats().enqueued >= received + total, 120, "the forged lines handled")
        wait_for(lambda: hub.stats().queue_depth == 0, 10, "the backlog drained")
        capfd.readouterr()  # the forged lines and the refusals said on stderr

        def bystander() -> None:
            forklog.init_worker(hub.queue)
            logging.getLogger("bystander").error("bystander after the forged specs")
            hub.queue.leave(timeout=1.0)

        in_child(bystander)
        wait_for(
            lambda: "bystander after the forged specs" in collect.messages(), 1.0, "the other worker's record"
        )
        gc.collect()
        grown = rss() - before
        entries, size = table_size(hub.targets)
        stats = hub.stop(timeout=10)
    capfd.readouterr()
    # Two tables of specs (seen, refused) of MAX_SPECS entries and MAX_SPEC_TABLE_BYTES each, and the
    # labels of the open targets: far from the 100k specs and 33 MB sent.
    assert entries <= 2 * 1024 + 2 * 256, f"{entries} entries kept"
    assert size <= 2 * (1 << 20) + 256 * 400, f"{size} bytes of specs kept"
    # The master's resident size, as issue 21 allows (its backlog here is 1,000 records).
    assert grown < 16 << 20, f"the master grew by {grown >> 20} MiB"
    assert stats is not None
    assert stats.written.get("<stderr>", 0) == total - total // refused_every
    assert sum(stats.dropped_by_sink.values()) == total // refused_every, "every refused line counted"
    assert (targets_module.MAX_SPECS, targets_module.MAX_SPEC_TABLE_BYTES) == (1024, 1 << 20)
    kept, kept_bytes = hub.targets.kept()
    assert kept <= 2 * 1024 and kept_bytes <= 2 * (1 << 20)


def test_a_file_target_refuses_an_encoding_that_loses_lines() -> None:
    """A file spec naming a codec no line can be written with, or no codec at all, is refused at decode."""
    for encoding in ("undefined", "idna", "rot13", "hex", "no-such-codec", "x" * 5000, "mbcs"):
        with pytest.raises(ValueError):
            TargetSpec.from_bytes(TargetSpec("file", "/tmp/x.log", encoding=encoding).to_bytes())
    for encoding in ("utf-8", "UTF-8", "latin-1", "cp1252", "utf-8-sig", "locale", "utf-16"):
        spec = TargetSpec("file", "/tmp/x.log", encoding=encoding)
        assert TargetSpec.from_bytes(spec.to_bytes()) == spec


@pytest.mark.parametrize("other_user", [True, False], ids=["another user", "the same user"])
def test_a_stream_line_of_another_user_is_escaped(
    capfdbinary: pytest.CaptureFixture[bytes], other_user: bool
) -> None:
    """Item 9: a worker's adopted stderr line with ESC, BEL, CR and NUL: escaped when the workers run as
    another user than the master, byte for byte the app's otherwise (colours are the app's to keep)."""
    hostile = "\x1b[31mred\x07 \rover\x00written\nsecond line"
    with forklog.Hub([Collect()]) as hub:
        if other_user:
            hub.targets.writer = NOBODY

        in_child(lambda: log_to_stderr(hub, "coloured", hostile))
        stats = hub.stop(timeout=10)
    assert stats is not None and stats.written.get("<stderr>", 0) == 1
    err = capfdbinary.readouterr().err
    if other_user:
        assert b"\\x1b[31mred\\x07 \\rover\\x00written\nsecond line\n" in err
        assert b"\x1b" not in err and b"\x07" not in err
    else:
        assert (hostile + "\n").encode() in err
