"""Console injection (issue 21, item 9): forklog's console writes no control character raw.

Every C0 control character but TAB, and DEL, is escaped in every field where
the master writes, whether the worker made the line or the master did; a
traceback keeps the line breaks between its own lines, each line escaped.
"""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path
from typing import List

import pytest

import forklog
from forklog import _wire as wire
from forklog._wire import framing
from forklog.formatters import TextFormatter
from forklog.settings import CONSOLE_FORMAT
from tests.support import Collect, a_bystander_is_heard, in_child

#: A raw byte the console must never show: C0 but TAB and LF, and DEL.
RAW = re.compile(rb"[\x00-\x08\x0b-\x1f\x7f]")
#: The time at the start of a record's line.
STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ")

NASTY = "a\x1b[31mred\x07bell\x00nul\rcr\nlf\x7fdel\ttab"
NASTY_ESCAPED = "a\\x1b[31mred\\x07bell\\x00nul\\rcr\\nlf\\x7fdel\ttab"
#: In an exception's text (without its LF, which would be a traceback's line break).
EXC_TEXT = NASTY.replace("\n", "")
EXC_ESCAPED = NASTY_ESCAPED.replace("\\n", "")


def console(path: Path) -> logging.StreamHandler:  # type: ignore[type-arg]
    handler = logging.StreamHandler(path.open("w", encoding="utf-8"))
    handler.setFormatter(TextFormatter(CONSOLE_FORMAT, escape_newlines=True))
    return handler


def records_of(data: bytes) -> List[str]:
    """The console's lines, each record's without its time."""
    assert RAW.search(data) is None, f"a raw control byte on the console: {data!r}"
    return [STAMP.sub("", line) for line in data.decode("utf-8").splitlines()]


def log_nasty(hub: forklog.Hub) -> None:
    handler = hub.handler()
    for name in ("unit", f"evil{NASTY}"):
        logger = logging.getLogger(name)
        logger.propagate = False
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    logging.getLogger("unit").info("%s", NASTY)
    logging.getLogger(f"evil{NASTY}").info("name")
    try:
        raise ValueError(f"boom {EXC_TEXT}")
    except ValueError:
        logging.getLogger("unit").exception("caught")
    for name in ("unit", f"evil{NASTY}"):
        logging.getLogger(name).removeHandler(handler)


@pytest.mark.parametrize("lines_in_workers", [True, False], ids=["worker-made lines", "master-made lines"])
def test_a_worker_cannot_write_control_characters_to_the_console(
    tmp_path: Path, lines_in_workers: bool
) -> None:
    path = tmp_path / "console.log"
    sinks: List[logging.Handler] = [console(path)]
    if not lines_in_workers:
        sinks.append(Collect())  # a sink that takes records: the master formats every line
    with forklog.Hub(sinks) as hub:
        in_child(lambda: log_nasty(hub))
        a_bystander_is_heard(hub, lambda text: text.encode() in path.read_bytes())
    lines = records_of(path.read_bytes())
    assert lines.pop() == "ERROR    bystander | bystander after the attack"
    assert lines[0] == f"INFO     unit | {NASTY_ESCAPED}"
    assert lines[1] == f"INFO     evil{NASTY_ESCAPED} | name"
    assert lines[2] == "ERROR    unit | caught"
    assert lines[3] == "Traceback (most recent call last):"
    assert lines[-1] == f"ValueError: boom {EXC_ESCAPED}"
    assert all(line.startswith("  ") for line in lines[4:-1]), lines


def test_a_hand_made_lines_payload_is_checked(tmp_path: Path) -> None:
    """A worker that sends its own line with raw control bytes forges no line and drives no terminal."""
    path = tmp_path / "console.log"
    forged = b"2024-01-01 00:00:00,000 INFO     x | hi\x1b[31m\nFORGED\x07\x00\r\x7f\tend"
    name = b"x"

    def send() -> None:
        head = wire.LINES_HEAD.pack(wire.LINES, 1, logging.INFO, time.time(), len(name), 0, 0)
        for frame in framing.frames(0, os.getpid(), 1, framing.NO_SEQ, head + name + forged):
            os.write(hub.queue.write_fd, frame)

    with forklog.Hub([console(path)]) as hub:
        in_child(send)
    lines = records_of(path.read_bytes())
    assert lines == ["INFO     x | hi\\x1b[31m\\nFORGED\\x07\\x00\\r\\x7f\tend"]


def test_files_stay_unescaped(tmp_path: Path) -> None:
    """Only an escaping formatter escapes: a file's line is the application's text."""
    path = tmp_path / "app.log"
    handler = logging.StreamHandler(path.open("w", encoding="utf-8"))
    handler.setFormatter(TextFormatter("%(message)s"))
    with forklog.Hub([handler]) as hub:
        in_child(lambda: log_nasty(hub))
    assert path.read_bytes().startswith(f"{NASTY}\n".encode())
