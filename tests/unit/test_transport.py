"""The pipe channel: frames, reassembly, garbage, and the drop policy."""

from __future__ import annotations

import itertools
import logging
import os
import time

from forklog import _wire as wire
from forklog._master.frame_reader import FrameReader
from forklog._master.ledger import Ledger
from forklog._master.receiver import Receiver
from forklog._wire import framing as _frame
from forklog._worker import channel as transport


def record(msg: str, level: int = logging.INFO) -> logging.LogRecord:
    return logging.LogRecord("t", level, __file__, 1, msg, (), None)


def test_large_records_are_reassembled_across_interleaved_frames() -> None:
    """Fragments of two writers interleave in the pipe; each record comes out whole."""
    big_a = wire.encode(record("a" * 20_000))
    big_b = wire.encode(record("b" * 9_000))
    frames_a = _frame.frames(0, 11, 1, 0, big_a)
    frames_b = _frame.frames(0, 22, 1, 0, big_b)
    assert all(len(f) <= _frame.PIPE_BUF for f in frames_a + frames_b)
    interleaved = [f for pair in itertools.zip_longest(frames_a, frames_b, fillvalue=b"") for f in pair]
    reader = FrameReader()
    out = list(reader.feed(b"".join(interleaved)))
    assert sorted((pid, payload) for _f, pid, _b, _s, payload in out) == [(11, big_a), (22, big_b)]
    assert reader.garbage_bytes == 0 and reader.pending_partial == 0


def test_garbage_and_torn_frames_are_skipped_and_counted() -> None:
    """Bytes that are not frames, and a frame cut short, cannot stop the reader."""
    good = _frame.frames(0, 5, 1, 1, wire.encode(record("good")))[0]
    corrupt = bytearray(good)
    corrupt[-1] ^= 0xFF  # CRC mismatch
    reader = FrameReader()
    stream = b"junk\x00\xf0\x1c" + bytes(corrupt) + good[:10] + b"more junk" + good
    out = list(reader.feed(stream[:37])) + list(reader.feed(stream[37:]))
    assert [wire.decode(p, pid).getMessage() for _f, pid, _b, _s, p in out] == ["good"]
    assert reader.garbage_bytes > 0 and reader.bad_frames >= 1


def test_an_unfinished_large_record_is_abandoned_and_counted() -> None:
    """A writer that stops between fragments (killed) leaves a counted, expired partial."""
    frames = _frame.frames(0, 77, 1, 3, wire.encode(record("z" * 10_000)))
    reader = FrameReader(partial_timeout=0.0)
    assert list(reader.feed(b"".join(frames[:-1]))) == []
    assert reader.pending_partial == 1
    reader.expire(time.monotonic() + 1)
    assert reader.pending_partial == 0 and reader.abandoned_records == {77: 1}


def test_a_large_record_cut_short_by_a_full_pipe_is_its_writers_drop_not_a_loss() -> None:
    """First frames out, no room for the rest within keep_wait: a counted drop; the ledger loses nothing."""
    channel = transport.Channel(pipe_size=4096, keep_wait=0.05)
    try:
        assert channel.read_fd is not None
        assert channel.send_record(record("z" * (64 << 10))) is False
        assert channel.dropped == {"INFO": 1} and channel.waited == 1
        reader = FrameReader(partial_timeout=0.0)
        assert reader.feed(os.read(channel.read_fd, 1 << 20)) == []
        assert reader.pending_partial == 1  # the frames that got out, set aside as incomplete
        assert channel.flush(1.0)  # the drop count goes out
        (report,) = reader.feed(os.read(channel.read_fd, 1 << 20))
        assert _frame.decode_drops(report[4]) == {"INFO": 1}
        reader.expire(time.monotonic() + 1)
        assert reader.abandoned_records == {channel.pid: 1}
        ledger = Ledger()
        ledger.dropped(channel.pid, channel.boot, 1)
        # It numbered one record, which never arrived and was reported dropped: no loss.
        assert ledger.close(channel.pid, {channel.boot: 1}) == 0, "lost without a kill"
    finally:
        channel.close()


def test_full_pipe_drops_below_keep_level_at_once_and_counts() -> None:
    """H4: INFO is dropped without waiting; ERROR waits keep_wait, then drops; both counted."""
    channel = transport.Channel(pipe_size=4096, keep_wait=0.05)
    try:
        sent = 0
        while channel.send_record(record(f"filler {sent}")):
            sent += 1
        assert sent > 0
        started = time.monotonic()
        assert channel.send_record(record("info")) is False
        assert time.monotonic() - started < 0.05
        started = time.monotonic()
        assert channel.send_record(record("error", logging.ERROR)) is False
        assert time.monotonic() - started >= 0.05
        assert channel.dropped == {"INFO": 2, "ERROR": 1}

        # Drain the pipe: the next record is followed by one drop report.
        assert channel.read_fd is not None
        reader = FrameReader()
        fillers = []
        while _frame.pipe_backlog(channel.read_fd):
            fillers += list(reader.feed(os.read(channel.read_fd, 1 << 16)))
        assert len(fillers) == sent
        assert channel.send_record(record("after"))
        after, report = reader.feed(os.read(channel.read_fd, 1 << 16))
        assert wire.decode(after[4], after[1]).getMessage() == "after"
        # The counts go as a control frame: no application record can pass for one (H27).
        assert report[0] & _frame.CONTROL and report[3] == _frame.NO_SEQ
        assert _frame.decode_drops(report[4]) == {"INFO": 2, "ERROR": 1}
        assert channel.dropped == {}
    finally:
        channel.close()


def test_the_receiver_sleeps_while_a_fraction_of_the_pipe_fills() -> None:
    """Between reads, the receiver lets records gather in proportion to their rate, within bounds."""
    pause = Receiver.pause
    enough, most = (1 << 20) // Receiver.GATHER_SHARE, Receiver.GATHER_MOST
    # 28 KB a millisecond (4 workers flat out): 1/8 of 1 MiB in about 4.7 ms.
    assert 0.0045 < pause(28_000, 0.001, enough, most) < 0.0048
    assert pause(500, 0.1, enough, most) == most, "a trickle: never longer than the most"
    assert pause(120_000, 0.0005, enough, most) == Receiver.GATHER_LEAST, "a flood: the least"
    assert pause(enough, 0.001, enough, most) == 0.0, "an eighth of the pipe already: read again at once"
    assert pause(0, 0.25, enough, most) == Receiver.GATHER_LEAST, "after a quiet spell"
