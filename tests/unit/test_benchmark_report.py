"""What the benchmarks print about themselves (issue 23, item 8): no line that reads as a result it is not."""

from __future__ import annotations

from benchmarks.throughput import progress_line


def test_the_floor_says_it_writes_nothing_not_zero_per_second() -> None:
    """The floor runs the log call with nothing written: "0.0k/s" read as a broken setup."""
    assert progress_line({"setup": "floor", "workers": 1, "delivered": 0.0}) == (
        "  floor x1: the log call alone, nothing written"
    )
    assert (
        progress_line({"setup": "forklog", "workers": 4, "delivered": 123_456.0}) == "  forklog x4: 123.5k/s"
    )
