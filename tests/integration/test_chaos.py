"""Crash safety: SIGKILL storms cannot stop the hub, erode it, or hide a loss."""

from __future__ import annotations

import contextlib
import logging
import os
import random
import re
import signal
import struct
import threading
import time
from pathlib import Path
from typing import Dict, List

import pytest

import forklog
from forklog._master.listener import Listener
from tests.integration.gunicorn_proc import wait_for
from tests.support import SharedCounters, check_writer

WRITERS = 8
KILLS = int(os.environ.get("CHAOS_KILLS", "200"))
QUEUE_SIZE = 10_000
MAX_CHILDREN = WRITERS + KILLS
STORM, PAUSE, BURST, EXIT = 0, 1, 2, 3
#: Every record carries its index among its writer's log calls.
INDEX = re.compile(r" i=(\d+)")
_ID = struct.Struct("<q")


class Tally(logging.Handler):
    """Keeps what arrives: each writer's record indices, in order, and forklog's own reports."""

    #: It stands for the file sink (it stalls "as a hung disk would"): the
    #: listener writes it itself, so a stall backs up into the hub's queue.
    forklog_inline = True

    def __init__(self) -> None:
        super().__init__()
        self.by_pid: Dict[int, List[int]] = {}
        self.burst = 0
        self.reports: List[logging.LogRecord] = []
        self.gate = threading.Event()  # cleared: the sink stalls, as a hung disk would
        self.gate.set()

    def emit(self, record: logging.LogRecord) -> None:
        self.gate.wait(60)
        if record.name == "forklog":
            self.reports.append(record)
        else:
            match = INDEX.search(record.getMessage())
            assert match is not None
            self.by_pid.setdefault(record.process or 0, []).append(int(match[1]))
            if record.msg.startswith("burst"):
                self.burst += 1


class Board:
    """Shared between the test and its writers: the mode, what each emitted, who paused."""

    def __init__(self) -> None:
        # slot 0: the mode; 1..MAX_CHILDREN: records emitted; then: paused flags
        self.cells = SharedCounters(1 + 2 * MAX_CHILDREN)

    @property
    def mode(self) -> int:
        return self.cells[0]

    @mode.setter
    def mode(self, value: int) -> None:
        self.cells[0] = value

    def emitted(self, k: int) -> int:
        return self.cells[1 + k]

    def set_emitted(self, k: int, value: int) -> None:
        self.cells[1 + k] = value

    def paused(self, k: int) -> bool:
        return self.cells[1 + MAX_CHILDREN + k] == 1

    def set_paused(self, k: int, value: bool) -> None:
        self.cells[1 + MAX_CHILDREN + k] = 1 if value else 0


def dropped_ids(drops: Path, k: int) -> List[int]:
    """The indices writer ``k`` saw dropped (written before its count of calls moved past them)."""
    path = drops / str(k)
    data = path.read_bytes() if path.exists() else b""
    return [i for (i,) in _ID.iter_unpack(data[: len(data) - len(data) % _ID.size])]


def writer(hub: forklog.Hub, board: Board, k: int, drops: Path) -> None:
    """A child: logs in a tight loop, 1% of records between 5 and 64 KiB, until told to stop.

    Each record carries its index ``i``; the index of each record the channel
    did not send whole (``Channel.sent`` did not move) goes to a file of
    this writer's before its count moves on, so the test knows which records
    were dropped, not only how many.
    """
    forklog.init_worker(hub.queue)
    queue = hub.queue
    log = logging.getLogger("chaos")
    rng = random.Random(k)
    emitted = 0
    burst_done = False
    fd = os.open(drops / str(k), os.O_WRONLY | os.O_CREAT | os.O_APPEND)

    def logged() -> None:
        nonlocal emitted
        if queue.sent == sent:
            os.write(fd, _ID.pack(emitted))
        emitted += 1
        board.set_emitted(k, emitted)

    while True:
        mode = board.mode
        if mode == STORM:
            big = "z" * rng.randint(5 << 10, 64 << 10) if rng.random() < 0.01 else ""
            sent = queue.sent
            log.info("storm k=%d i=%d %s", k, emitted, big)
            logged()
        elif mode == BURST and not burst_done:
            for j in range(QUEUE_SIZE // WRITERS):
                sent = queue.sent
                log.info("burst k=%d i=%d j=%d", k, emitted, j)
                logged()
            burst_done = True
        elif mode == EXIT:
            queue.leave(timeout=5)  # forklog's exit path
            return
        else:
            if not board.paused(k):
                # Report the storm's drops before pausing (all of them: one left over would be
                # reported during the burst and counted as a new drop).
                while not hub.queue.flush(timeout=5):
                    pass
                board.set_paused(k, True)
            time.sleep(0.001)


def drain(hub: forklog.Hub) -> None:
    """Wait until the hub holds nothing: its pipes empty, and what the receiver read is written.

    Bytes the receiver has read and not yet queued are in neither count: two
    more of its rounds, and everything read before is queued, then written.
    """

    def empty() -> bool:
        stats = hub.stats()
        return stats.queue_depth == 0 and stats.pipe_bytes == 0

    assert hub._receiver is not None
    wait_for(empty, 30, "the hub to drain")
    rounds = hub._receiver.rounds
    wait_for(
        lambda: hub._receiver is not None and hub._receiver.rounds >= rounds + 2, 5, "two receiver rounds"
    )
    wait_for(empty, 30, "the hub to drain what its receiver held")


def spawn(hub: forklog.Hub, board: Board, k: int, drops: Path) -> int:
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            writer(hub, board, k, drops)
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    return pid


def check_writers(
    tally: Tally, board: Board, stats: forklog.HubStats, writers: Dict[int, int], drops: Path, *, killed: bool
) -> None:
    """Each writer's records by identity: written once and in order, or dropped by its own account and
    reported; lost only by a killed writer, and then only what it had in flight."""
    for k, pid in writers.items():
        check_writer(
            f"writer {k} (pid {pid})",
            emitted=board.emitted(k),
            delivered=tally.by_pid.get(pid, []),
            reported=stats.dropped_by_process.get(pid, 0),
            lost=stats.lost_by_process.get(pid, 0),
            killed=killed,
            dropped=dropped_ids(drops, k),
        )


def test_sigkill_storm(tmp_path: Path) -> None:
    """200 SIGKILLs mid-stream: no stall, no listener death, capacity intact, every loss reported."""
    tally = Tally()
    board = Board()
    hub = forklog.Hub([tally], queue_size=QUEUE_SIZE).start()
    final = None
    rng = random.Random(20261128)
    live: Dict[int, int] = {}  # k -> pid
    killed: Dict[int, int] = {}
    try:
        started = time.monotonic()
        for k in range(WRITERS):
            live[k] = spawn(hub, board, k, tmp_path)
        next_k = WRITERS
        for _ in range(KILLS):
            victim = rng.choice(sorted(live))
            target = board.emitted(victim) + rng.randint(1, 400)

            def logged(v: int = victim, t: int = target) -> bool:
                return board.emitted(v) >= t

            wait_for(logged, 30, f"writer {victim} to log", interval=0.001)
            pid = live.pop(victim)
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            hub.process_exited(pid)  # what gunicorn's child_exit hook does
            killed[victim] = pid
            live[next_k] = spawn(hub, board, next_k, tmp_path)
            next_k += 1

        print(f"storm: {KILLS} kills in {time.monotonic() - started:.1f}s")
        # The hub is alive and catches up.
        board.mode = PAUSE
        wait_for(lambda: all(board.paused(k) for k in live), 30, "the survivors to pause")
        wait_for(lambda: hub.stats().settled_processes == KILLS, 30, "the killed writers to be settled")
        drain(hub)
        stats = hub.stats()
        assert stats.listener_alive
        check_writers(tally, board, stats, killed, tmp_path, killed=True)

        # Capacity is not eroded: with the sink stalled, a burst of queue_size
        # records from the survivors is held whole, then written.
        dropped_before = stats.dropped
        emitted_before = {k: board.emitted(k) for k in live}
        tally.gate.clear()
        board.mode = BURST

        def burst_sent() -> bool:
            return all(board.emitted(k) - emitted_before[k] == QUEUE_SIZE // WRITERS for k in live)

        wait_for(burst_sent, 30, "the survivors to send the burst")
        tally.gate.set()
        wait_for(
            lambda: tally.burst + hub.stats().dropped - dropped_before >= QUEUE_SIZE,
            30,
            "the burst to arrive or be reported dropped",
        )
        stats = hub.stats()
        assert stats.dropped == dropped_before, (
            f"capacity eroded: {stats.dropped - dropped_before} of the burst dropped "
            f"(arrived {tally.burst}, queue depth {stats.queue_depth}, pipe bytes {stats.pipe_bytes})"
        )
        assert tally.burst == QUEUE_SIZE

        board.mode = EXIT
        for pid in live.values():
            os.waitpid(pid, 0)
            hub.process_exited(pid)
        wait_for(lambda: hub.stats().settled_processes == KILLS + WRITERS, 30, "the survivors to be settled")
        started = time.monotonic()
        final = hub.stop(timeout=5)
        assert time.monotonic() - started < 5.5
    finally:
        board.mode = EXIT
        tally.gate.set()
        for pid in list(live.values()):
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        hub.stop(timeout=1)
    assert final is not None

    check_writers(tally, board, final, live, tmp_path, killed=False)
    check_writers(tally, board, final, killed, tmp_path, killed=True)
    assert set(tally.by_pid) <= {*killed.values(), *live.values()}, "records from a process that never wrote"

    # Losses are in the log itself, as forklog records.
    lost_lines = [r for r in tally.reports if r.msg.startswith("forklog: lost")]
    assert sum(r.__dict__["forklog_lost"]["count"] for r in lost_lines) == final.lost
    assert final.bad_records == 0


def _flood(hub: forklog.Hub, cells: SharedCounters, slot: int, count: int) -> None:
    """A child: ``count`` INFO records as fast as it can, then wait to die.

    Its count of calls goes to ``cells[slot]``, its drops not yet reported to ``cells[2 + slot]``.
    """
    forklog.init_worker(hub.queue)
    log = logging.getLogger("flood")
    for i in range(count):
        log.info("flood slot=%d i=%d %s", slot, i, "f" * 200)
        cells[2 + slot] = sum(hub.queue.dropped.values())
        cells[slot] = i + 1
    while True:
        time.sleep(0.01)


def test_a_writer_killed_before_any_record_got_through_is_settled_at_stop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A writer whose last records were dropped and never reported, SIGKILLed: they are counted lost at stop.

    Each writer has a pipe of its own: the victim's fills while the master is stalled on the
    first writer's, so it drops and is killed before it can report the drops.
    """
    # No liveness round between the kill and the stop (a kill in the last second, no child_exit hook).
    monkeypatch.setattr(Listener, "LIVENESS_INTERVAL", 3600.0)
    tally = Tally()
    cells = SharedCounters(4)
    hub = forklog.Hub([tally], queue_size=1000, pipe_size=64 << 10).start()
    pids: List[int] = []
    try:
        tally.gate.clear()  # a stalled disk: the backlog, then the pipe, fill up
        for slot, count in ((0, 20_000), (1, 1000)):
            pid = os.fork()
            if pid == 0:
                try:
                    _flood(hub, cells, slot, count)
                finally:
                    os._exit(1)
            pids.append(pid)
            wait_for(lambda s=slot, c=count: cells[s] == c, 60, f"writer {slot} to log")  # type: ignore[misc]
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        victim = pids[1]
        tally.gate.set()
        final = hub.stop(timeout=20)
    finally:
        tally.gate.set()
        hub.stop(timeout=1)
    assert final is not None
    assert cells[3] > 0, "the victim was meant to die with drops it never reported"
    assert final.lost_by_process.get(victim), "the victim's drops, never reported, are reported lost"
    for slot, pid in enumerate(pids):
        check_writer(
            f"writer {slot} (pid {pid})",
            emitted=cells[slot],
            delivered=tally.by_pid.get(pid, []),
            reported=final.dropped_by_process.get(pid, 0),
            lost=final.lost_by_process.get(pid, 0),
            killed=True,
            unreported=cells[2 + slot],
        )


def _flood_then(hub: forklog.Hub, cells: SharedCounters, slot: int, leave: bool) -> None:
    """A child: INFO records until it has dropped some; then leave by forklog's exit path, or wait to die."""
    forklog.init_worker(hub.queue)
    log = logging.getLogger("flood")
    i = 0
    # Until a drop cannot be reported: the pipe has no room left even for the drop count.
    while not (hub.queue.dropped and not hub.queue.flush(timeout=0)):
        log.info("flood slot=%d i=%d %s", slot, i, "f" * 200)
        i += 1
    cells[slot] = 1 + (not hub.queue.leave(timeout=0) if leave else 0)
    while not leave:
        time.sleep(0.01)  # until the test's SIGKILL


def test_a_loss_says_whether_its_writer_exited_or_was_killed() -> None:
    """The exit mark (Channel.leave) makes a loss read "(exited)"; a writer without it reads "(killed)"."""
    tally = Tally()
    cells = SharedCounters(2)
    hub = forklog.Hub([tally], queue_size=100, pipe_size=64 << 10).start()
    pids: List[int] = []
    try:
        tally.gate.clear()  # a stalled disk: the pipe fills, records are dropped
        for slot, leave in ((0, True), (1, False)):
            pid = os.fork()
            if pid == 0:
                try:
                    _flood_then(hub, cells, slot, leave)
                finally:
                    os._exit(0)
            pids.append(pid)
            wait_for(lambda s=slot: cells[s] != 0, 60, f"writer {slot} to drop records")  # type: ignore[misc]
        assert cells[0] == 2, "the exit path reported the drops through a full pipe"
        os.waitpid(pids[0], 0)
        os.kill(pids[1], signal.SIGKILL)
        os.waitpid(pids[1], 0)
        tally.gate.set()
        for pid in pids:
            hub.process_exited(pid)
        final = hub.stop(timeout=20)
    finally:
        tally.gate.set()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, ChildProcessError):
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
        hub.stop(timeout=1)
    assert final is not None
    said: Dict[int, List[str]] = {}
    for report in tally.reports:
        if "forklog_lost" in report.__dict__:
            why = report.getMessage().rsplit(" ", 1)[-1]
            said.setdefault(report.__dict__["forklog_lost"]["pid"], []).append(why)
    assert said == {pids[0]: ["(exited)"], pids[1]: ["(killed)"]}, said
