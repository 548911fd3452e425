"""A worker forging frames cannot grow the master's state, and a writer of another wire version is named.

Issue 21, items 11 and 12: a real hub and a forked child writing frames
packed from the documented layout (``forklog._wire.framing``), with the pid,
boot, sequence number and flags it chooses. Every table the master keeps per
key stays within its documented bound, what a bound refuses is counted, the
master's memory stays flat, and another worker's next record is written
within a second.
"""

from __future__ import annotations

import logging
import os
import resource
import signal
import struct
import zlib
from typing import Iterator, List

import pytest

import forklog
from forklog._master.listener import Listener
from forklog._wire import framing, registration
from tests.support import PeakRss, forked, in_child, wait_for

#: The bounds the master documents (forklog._master.ledger, counters, frame_reader).
MAX_ACCOUNTS = 4096
MAX_BOOTS_PER_PID = 16
MAX_LEVEL_NAMES = 64
MAX_PARTIAL_RECORDS = 4096

FIRST, LAST, CONTROL = 0x01, 0x02, 0x04
NO_SEQ = 0xFFFFFFFF


def frame(
    flags: int,
    pid: int,
    boot: int,
    seq: int,
    *,
    index: int = 0,
    payload: bytes = b"",
    version: int = framing._VERSION,
) -> bytes:
    """A frame as the layout says: magic, CRC32 of the rest, flags, version, length, pid, boot, seq, index."""
    checked = struct.pack("<BBHIIII", flags, version, len(payload), pid, boot, seq, index) + payload
    return b"\xf0\x1c" + struct.pack("<I", zlib.crc32(checked)) + checked


def write_frames(fd: int, frames: List[bytes]) -> None:
    """Write ``frames`` whole, as many a ``write()`` as fit in PIPE_BUF (atomic), waiting for room."""
    chunk: List[bytes] = []
    size = 0

    def flush() -> None:
        data = b"".join(chunk)
        while True:
            try:
                os.write(fd, data)
                return
            except BlockingIOError:
                framing.wait_writable(fd, 1.0)

    for one in frames:
        if size + len(one) > framing.PIPE_BUF:
            flush()
            chunk.clear()
            size = 0
        chunk.append(one)
        size += len(one)
    if chunk:
        flush()


class Heard(logging.Handler):
    """A sink that keeps the bystanders' messages only (the rest counted), so it holds no memory."""

    forklog_inline = True

    def __init__(self) -> None:
        super().__init__()
        self.messages: List[str] = []
        self.others = 0

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("bystander"):
            self.messages.append(message)
        else:
            self.others += 1


def another_worker_is_heard(hub: forklog.Hub, heard: Heard, text: str = "bystander after the attack") -> None:
    """A second worker's record, logged after the attack, is written within a second."""

    def log() -> None:
        forklog.init_worker(hub.queue)
        logging.getLogger("bystander").error(text)
        hub.queue.leave(timeout=1.0)

    in_child(log)
    wait_for(lambda: text in heard.messages, 1.0, "the other worker's record after the attack")
    assert hub.stats().listener_alive


@pytest.fixture
def no_liveness(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forged pids stay "alive": the tables must bound themselves, not wait for the dead to be settled."""
    monkeypatch.setattr(Listener, "LIVENESS_INTERVAL", 3600.0)


@pytest.fixture
def hub_and_sink() -> Iterator[tuple[forklog.Hub, Heard]]:
    heard = Heard()
    hub = forklog.Hub([heard], max_record_bytes=1 << 20, pipe_size=1 << 16).start()
    try:
        another_worker_is_heard(hub, heard, "bystander before the attack")  # warm: allocations made
        yield hub, heard
    finally:
        hub.stop(timeout=10)


@pytest.mark.usefixtures("no_liveness")
def test_forged_boots_and_pids_keep_the_writers_accounts_bounded(
    hub_and_sink: tuple[forklog.Hub, Heard],
) -> None:
    """100k records, each claiming a new (pid, boot): all are the attacker's own (its pipe names it)."""
    hub, heard = hub_and_sink
    count = 100_000
    received = hub.stats().enqueued
    peak = PeakRss()

    def attack() -> None:
        me = os.getpid()
        frames = [
            frame(FIRST | LAST, me if i % 2 else 5_000_000 + i, i, 0, payload=b"x") for i in range(count)
        ]
        write_frames(hub.queue.write_fd, frames)

    attacker = in_child(attack)
    wait_for(lambda: hub.stats().enqueued >= received + count, 30, "the forged records to be read")
    grown = peak.growth()
    ledger = hub._counters.ledger
    assert len(ledger._writers) <= MAX_ACCOUNTS
    assert len(ledger.boots(attacker)) <= 1, "a claimed boot is not the writer's"
    assert not [pid for pid in ledger.pids() if pid >= 5_000_000], "a claimed pid is not the writer's"
    assert grown < 12 << 20, f"the master grew by {grown >> 20} MiB"
    another_worker_is_heard(hub, heard)


def test_zero_byte_first_fragments_keep_the_partial_records_bounded(
    hub_and_sink: tuple[forklog.Hub, Heard],
) -> None:
    """100k first fragments of nothing, each of a new record: at most MAX_PARTIAL_RECORDS set aside."""
    hub, heard = hub_and_sink
    count = 100_000
    peak = PeakRss()

    def attack() -> None:
        me = os.getpid()
        write_frames(hub.queue.write_fd, [frame(FIRST, me, 1, seq) for seq in range(count)])

    attacker = in_child(attack)
    another_worker_is_heard(hub, heard)  # read behind every forged frame
    grown = peak.growth()
    reader = hub._receiver.frames  # type: ignore[union-attr]
    assert reader.pending_partial <= MAX_PARTIAL_RECORDS
    assert grown < 8 << 20, f"the master grew by {grown >> 20} MiB"
    stats = hub.stats()
    assert stats.refused_by_bound["partial_records"] >= count - MAX_PARTIAL_RECORDS
    assert stats.incomplete_by_process[attacker] >= count - MAX_PARTIAL_RECORDS


def test_zero_byte_fragments_of_one_record_are_bounded(hub_and_sink: tuple[forklog.Hub, Heard]) -> None:
    """One record of 200k empty fragments: abandoned past the frames a max_record_bytes record has."""
    hub, heard = hub_and_sink
    count = 200_000
    most = (1 << 20) // (512 - framing.HEADER_SIZE) + 1  # a 1 MiB record in POSIX's smallest frames

    def attack() -> None:
        me = os.getpid()
        frames = [frame(FIRST, me, 1, 7)] + [frame(0, me, 1, 7, index=i) for i in range(1, count)]
        write_frames(hub.queue.write_fd, frames)

    attacker = in_child(attack)
    another_worker_is_heard(hub, heard)
    reader = hub._receiver.frames  # type: ignore[union-attr]
    held = sum(len(entry.parts) for entry in reader._partial.values())
    assert held <= most, f"{held} fragments held for records still being put together"
    stats = hub.stats()
    assert stats.refused_by_bound["max_record_bytes"] == 1
    assert stats.incomplete_by_process[attacker] == 1


def test_a_raw_record_past_max_record_bytes_is_not_put_together(
    hub_and_sink: tuple[forklog.Hub, Heard],
) -> None:
    """An 8 MiB record sent raw, in its frames, to a hub of max_record_bytes=1 MiB: abandoned, freed."""
    hub, heard = hub_and_sink
    size = 8 << 20
    bad_records = hub.stats().bad_records
    peak = PeakRss()

    def attack() -> None:
        me = os.getpid()
        write_frames(hub.queue.write_fd, framing.frames(0, me, 1, 0, b"x" * size))

    attacker = in_child(attack)
    another_worker_is_heard(hub, heard)
    grown = peak.growth()
    assert grown < 4 << 20, f"the master grew by {grown >> 20} MiB for a record past max_record_bytes"
    stats = hub.stats()
    assert stats.refused_by_bound["max_record_bytes"] == 1
    assert stats.incomplete_by_process == {attacker: 1}
    assert stats.bad_records == bad_records, "the record was put together and decoded"
    assert hub._receiver.frames.pending_partial == 0  # type: ignore[union-attr]


@pytest.mark.usefixtures("no_liveness")
def test_drop_reports_naming_100k_levels_keep_the_level_table_bounded(
    hub_and_sink: tuple[forklog.Hub, Heard],
) -> None:
    """Drop reports of 64 new level names each, 100k names in all: the table keeps its bound, the total."""
    hub, heard = hub_and_sink
    names = 100_000
    peak = PeakRss()

    def attack() -> None:
        me = os.getpid()
        frames: List[bytes] = []
        for start in range(0, names, 64):
            report = framing.encode_drops({f"L{i}": 1 for i in range(start, min(names, start + 64))})
            frames += framing.frames(CONTROL, me, 1, NO_SEQ, report)
        write_frames(hub.queue.write_fd, frames)

    attacker = in_child(attack)
    another_worker_is_heard(hub, heard)
    grown = peak.growth()
    stats = hub.stats()
    standard = len(logging.getLevelNamesMapping()) + 1  # and "other"
    assert len(stats.dropped_by_level) <= MAX_LEVEL_NAMES + standard
    assert stats.dropped == names, "drops past the bound are counted all the same"
    assert stats.dropped_by_process[attacker] == names
    assert grown < 6 << 20, f"the master grew by {grown >> 20} MiB"
    assert stats.refused_by_bound["level_names"] == names - MAX_LEVEL_NAMES


def test_a_writer_of_another_wire_version_is_named_once_and_counted(
    hub_and_sink: tuple[forklog.Hub, Heard], capfd: pytest.CaptureFixture[str]
) -> None:
    """Frames of the next wire version: "pid P speaks wire vN, this hub vM" once; skipped, counted.

    P is the writer's pid as its pipe names it, not the 424242 its frames claim.
    """
    hub, heard = hub_and_sink
    claimed = 424242
    other = framing._VERSION + 1
    before = hub.stats()
    sent: List[bytes] = []
    go_on_r, go_on_w = os.pipe()

    def writer() -> None:
        write_frames(
            hub.queue.write_fd,
            [
                frame(FIRST | LAST, claimed, 1, s, payload=b"from the next release", version=other)
                for s in range(3)
            ],
        )
        os.read(go_on_r, 1)
        write_frames(
            hub.queue.write_fd,
            [frame(FIRST | LAST, claimed, 1, s, payload=b"later", version=other) for s in range(3, 5)],
        )

    pid = forked(writer)
    sent.extend(
        frame(FIRST | LAST, claimed, 1, s, payload=b"from the next release", version=other) for s in range(3)
    )
    sent.extend(frame(FIRST | LAST, claimed, 1, s, payload=b"later", version=other) for s in range(3, 5))
    wait_for(lambda: hub.stats().foreign_by_process.get(pid, 0) == 3, 5, "the first frames")
    os.write(go_on_w, b"x")
    os.waitpid(pid, 0)
    another_worker_is_heard(hub, heard, "bystander 2")

    err = capfd.readouterr().err
    assert err.count(f"pid {pid} speaks wire v{other}, this hub v{framing._VERSION}") == 1, err
    stats = hub.stats()
    assert stats.foreign_by_process == {pid: 5}
    assert stats.foreign_bytes == sum(len(one) for one in sent)
    assert stats.garbage_bytes == before.garbage_bytes, "counted as garbage"
    assert stats.enqueued == before.enqueued + 1  # the bystander's record alone


def test_the_documented_bounds_are_the_modules() -> None:
    """The numbers these tests hold the master to are the ones its modules document."""
    from forklog._master import counters, frame_reader, ledger

    assert (ledger.MAX_ACCOUNTS, ledger.MAX_BOOTS_PER_PID) == (MAX_ACCOUNTS, MAX_BOOTS_PER_PID)
    assert counters.MAX_LEVEL_NAMES == MAX_LEVEL_NAMES
    assert frame_reader.MAX_PARTIAL_RECORDS == MAX_PARTIAL_RECORDS


def test_a_writer_refused_an_account_is_written_and_not_reported_lost(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """Past MAX_ACCOUNTS a writer's records go unaccounted (counted, said); its settlement, no false loss."""
    from forklog._master.ledger import Ledger

    ledger = Ledger()
    for boot in range(MAX_ACCOUNTS):
        ledger.received(5_000_000 + boot, boot, 0)  # forged writers fill the table
    for seq in range(5):
        ledger.received(77, 1, seq)
        ledger.received(78, 1, seq)
    assert len(ledger._writers) == MAX_ACCOUNTS
    assert ledger.refused == 10
    assert "records of pid 77 (boot 00000001) are written but not accounted" in capfd.readouterr().err
    assert ledger.close(77, {1: 5}) == 0, "its five records arrived: none lost"
    assert ledger.close(78, {1: 7}) == 2, "it numbered seven, five arrived"


def test_registering_pipes_cannot_take_the_masters_descriptors(monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker forking children that each register pipes: the master keeps most of its descriptor limit.

    Each registered pipe holds two of the master's descriptors. Under a
    limit of 256, at most 64 pipes are taken (16 a pid); the rest are closed,
    counted in ``refused_by_bound["writers"]`` and said; a worker registered
    before the attack is heard, and once the attackers are gone their pipes
    are freed: a new worker is heard too.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    monkeypatch.setattr(framing, "WRITER_PIPE_SIZES", (1 << 16,))
    heard = Heard()
    children: List[int] = []
    try:
        hub = forklog.Hub([heard], pipe_size=1 << 16).start()
        try:
            go_read, go_write = os.pipe()
            release_read, release_write = os.pipe()

            def bystander() -> None:  # registered before the attack, logs after it
                forklog.init_worker(hub.queue)
                os.read(go_read, 1)
                logging.getLogger("bystander").error("bystander after the attack")
                hub.queue.leave(timeout=1.0)
                os._exit(0)

            sent_read, sent_write = os.pipe()

            def attacker() -> None:  # registers 20 pipes, keeps them open until released
                sent = 0 if hub.queue.hub_gone else 1  # its own, at the fork
                for _ in range(20):
                    pipe_read, _pipe_write = os.pipe()
                    board = os.memfd_create("board")
                    os.ftruncate(board, 64)
                    sent += registration.send(hub.queue.register_fd, framing._VERSION, 1, pipe_read, board)
                    os.close(pipe_read)
                os.write(sent_write, bytes([sent]))
                os.read(release_read, 1)
                os._exit(0)

            assert hub._receiver is not None
            sources = hub._receiver.sources
            children.append(forked(bystander))
            wait_for(lambda: len(sources.writers()) >= 1, 5, "the bystander's pipe")
            children += [forked(attacker) for _ in range(8)]
            # The registrations that reached the socket (a full one makes a sender wait, then give up).
            sent = sum(os.read(sent_read, 1)[0] for _ in range(8))
            assert sent > 64, f"only {sent} registrations sent: the bound was never reached"
            wait_for(
                lambda: sources.refused + len(sources.writers()) == sent + 1,
                10,
                f"every registration taken in or refused (sent {sent})",
            )
            assert sources.refused == sent + 1 - sources.most, (sources.refused, sent, sources.most)
            assert len(sources.by_fd) <= 64 + 1, "more pipes than a quarter of the descriptor limit"
            assert len(os.listdir("/proc/self/fd")) < 192, "the master's descriptors are nearly gone"
            assert hub.stats().refused_by_bound["writers"] == sources.refused
            os.write(go_write, b"g")
            wait_for(lambda: "bystander after the attack" in heard.messages, 1.0, "the bystander's record")
            os.write(release_write, b"r" * 8)
            for pid in children:
                os.waitpid(pid, 0)
            children.clear()
            wait_for(lambda: not sources.writers(), 5, "the attackers' pipes freed at their end")
            another_worker_is_heard(hub, heard)
        finally:
            for pid in children:  # a failed assertion leaves them waiting
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            hub.stop(timeout=10)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
