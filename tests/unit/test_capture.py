"""The line writer that stands in for sys.stdout and sys.stderr under capture_output."""

from __future__ import annotations

import logging

from forklog.worker.capture import MAX_LINE, LineLogger
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
