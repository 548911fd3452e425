"""The line writer that stands in for sys.stdout and sys.stderr under capture_output."""

from __future__ import annotations

import faulthandler
import logging
import subprocess
from pathlib import Path

from forklog._worker.capture import MAX_LINE, LineLogger
from tests.support import Collect


def test_one_record_per_line_and_the_tail_on_flush() -> None:
    """Partial writes are joined; each newline ends a record; flush() logs the rest."""
    collect = Collect()
    logger = logging.getLogger("capture.test")
    logger.propagate = False
    logger.addHandler(collect)
    logger.setLevel(logging.DEBUG)
    out = LineLogger(logger, logging.INFO, "<stdout>")
    print("first", "line", file=out)
    out.write("sec")
    out.write("ond\r\nthird\n\nfour")
    assert collect.messages() == ["first line", "second", "third", ""]
    out.flush()
    out.write("x" * (MAX_LINE + 10))
    assert collect.messages()[4:] == ["four", "x" * (MAX_LINE + 10)]
    assert {r.levelno for r in collect.records} == {logging.INFO}
    logger.removeHandler(collect)


def test_the_capture_streams_are_streams(tmp_path: Path) -> None:
    """encoding, buffer (bytes), fileno(): faulthandler, click-style bytes and subprocess all work."""
    collect = Collect()
    logger = logging.getLogger("capture.streams")
    logger.propagate = False
    logger.addHandler(collect)
    logger.setLevel(logging.DEBUG)
    with open(tmp_path / "fd.txt", "w") as original:
        out = LineLogger(logger, logging.INFO, "<stdout>", original)
        assert out.encoding == "utf-8" and out.fileno() == original.fileno()
        out.buffer.write(b"bytes line \xe2\x9c\x93\n")
        out.write(b"raw bytes\n")
        faulthandler.dump_traceback(file=out, all_threads=False)  # writes to the descriptor
        subprocess.run(["echo", "from a subprocess"], stdout=out, check=True)  # type: ignore[call-overload]
    assert collect.messages() == ["bytes line \u2713", "raw bytes"]
    written = (tmp_path / "fd.txt").read_text()
    assert "Stack (most recent call first)" in written and "from a subprocess" in written
    logger.removeHandler(collect)
