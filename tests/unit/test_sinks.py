"""The rotating file sink the shipped config uses."""

from __future__ import annotations

import logging
from pathlib import Path

import forklog


def test_rotates_by_counted_size_and_keeps_every_line(tmp_path: Path) -> None:
    """Lines go to the current file until the next would pass maxBytes; none is lost or split."""
    path = tmp_path / "app.log"
    path.write_text("x" * 100 + "\n")  # an existing file counts from its size
    sink = forklog.RotatingFileSink(path, maxBytes=1000, backupCount=20)
    sink.setFormatter(logging.Formatter("%(message)s"))
    for i in range(100):
        sink.emit(logging.makeLogRecord({"msg": f"line {i:03d} " + "y" * 40}))
    sink.close()
    files = sorted(
        tmp_path.glob("app.log*"), key=lambda p: -int(p.suffix[1:]) if p.suffix[1:].isdigit() else 0
    )
    lines = [line for f in files for line in f.read_text().splitlines()]
    assert lines[0] == "x" * 100
    assert lines[1:] == [f"line {i:03d} " + "y" * 40 for i in range(100)]
    assert all(f.stat().st_size <= 1000 for f in files)
    assert len(files) > 5


def test_through_a_hub(tmp_path: Path) -> None:
    """With the hub flushing once per batch, every record is on disk after stop()."""
    path = tmp_path / "hub.log"
    sink = forklog.RotatingFileSink(path, maxBytes=0)
    sink.setFormatter(forklog.TextFormatter("%(levelname)s %(message)s"))
    with forklog.Hub([sink]) as hub:
        logger = logging.getLogger("sinks")
        logger.propagate = False
        logger.addHandler(hub.handler())
        logger.setLevel(logging.INFO)
        for i in range(1000):
            logger.info("record %d", i)
    assert path.read_text().splitlines() == [f"INFO record {i}" for i in range(1000)]
