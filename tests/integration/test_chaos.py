"""Crash safety: SIGKILL storms cannot stop the hub, erode it, or hide a loss."""

from __future__ import annotations

import logging
import os
import random
import signal
import threading
import time
from typing import Dict, List

import pytest

import forklog
from forklog._master.listener import Listener
from tests.integration.gunicorn_proc import wait_for
from tests.support import SharedCounters

WRITERS = 8
KILLS = int(os.environ.get("CHAOS_KILLS", "200"))
QUEUE_SIZE = 10_000
MAX_CHILDREN = WRITERS + KILLS
STORM, PAUSE, BURST, EXIT = 0, 1, 2, 3


class Tally(logging.Handler):
    """Counts what arrives, per pid; keeps forklog's own reports."""

    #: It stands for the file sink (it stalls "as a hung disk would"): the
    #: listener writes it itself, so a stall backs up into the hub's queue.
    forklog_inline = True

    def __init__(self) -> None:
        super().__init__()
        self.by_pid: Dict[int, int] = {}
        self.burst = 0
        self.reports: List[logging.LogRecord] = []
        self.gate = threading.Event()  # cleared: the sink stalls, as a hung disk would
        self.gate.set()

    def emit(self, record: logging.LogRecord) -> None:
        self.gate.wait(60)
        if record.name == "forklog":
            self.reports.append(record)
        else:
            pid = record.process or 0
            self.by_pid[pid] = self.by_pid.get(pid, 0) + 1
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


def writer(hub: forklog.Hub, board: Board, k: int) -> None:
    """A child: logs in a tight loop, 1% of records between 5 and 64 KiB, until told to stop."""
    forklog.init_worker(hub.queue)
    log = logging.getLogger("chaos")
    rng = random.Random(k)
    emitted = 0
    burst_done = False
    while True:
        mode = board.mode
        if mode == STORM:
            big = "z" * rng.randint(5 << 10, 64 << 10) if rng.random() < 0.01 else ""
            log.info("storm k=%d i=%d %s", k, emitted, big)
            emitted += 1
            board.set_emitted(k, emitted)
        elif mode == BURST and not burst_done:
            for j in range(QUEUE_SIZE // WRITERS):
                log.info("burst k=%d j=%d", k, j)
                emitted += 1
                board.set_emitted(k, emitted)
            burst_done = True
        elif mode == EXIT:
            return
        else:
            if not board.paused(k):
                # Report the storm's drops before pausing (all of them: one left over would be
                # reported during the burst and counted as a new drop).
                while not hub.queue.flush(timeout=5):
                    pass
                board.set_paused(k, True)
            time.sleep(0.001)


def spawn(hub: forklog.Hub, board: Board, k: int) -> int:
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            writer(hub, board, k)
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    return pid


def test_sigkill_storm() -> None:
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
            live[k] = spawn(hub, board, k)
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
            live[next_k] = spawn(hub, board, next_k)
            next_k += 1

        print(f"storm: {KILLS} kills in {time.monotonic() - started:.1f}s")
        # The hub is alive and catches up.
        board.mode = PAUSE
        wait_for(lambda: all(board.paused(k) for k in live), 30, "the survivors to pause")
        wait_for(lambda: hub.stats().settled_processes == KILLS, 30, "the killed writers to be settled")
        wait_for(lambda: hub.stats().queue_depth == 0 and hub.stats().pipe_bytes == 0, 30, "the hub to drain")
        stats = hub.stats()
        assert stats.listener_alive

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

    # Every record a killed writer emitted arrived, or was reported dropped or lost.
    # The record being written at the SIGKILL may have arrived without being counted.
    unreported = {}
    for k, pid in killed.items():
        emitted = board.emitted(k)
        accounted = tally.by_pid.get(pid, 0) + final.dropped_by_process.get(pid, 0)
        accounted += final.lost_by_process.get(pid, 0)
        if not emitted <= accounted <= emitted + 1:
            unreported[pid] = (emitted, accounted)
    assert not unreported, f"(emitted, accounted) of killed writers: {unreported}"
    for k, pid in live.items():
        accounted = tally.by_pid.get(pid, 0) + final.dropped_by_process.get(pid, 0)
        assert accounted + final.lost_by_process.get(pid, 0) == board.emitted(k)

    # Losses are in the log itself, as forklog records.
    lost_lines = [r for r in tally.reports if r.msg.startswith("forklog: lost")]
    assert sum(r.__dict__["forklog_lost"]["count"] for r in lost_lines) == final.lost
    assert final.bad_records == 0


def _flood(hub: forklog.Hub, cells: SharedCounters, slot: int, count: int) -> None:
    """A child: ``count`` INFO records as fast as it can, its count in ``cells[slot]``, then wait to die."""
    forklog.init_worker(hub.queue)
    log = logging.getLogger("flood")
    for i in range(count):
        log.info("flood slot=%d i=%d %s", slot, i, "f" * 200)
        cells[slot] = i + 1
    while True:
        time.sleep(0.01)


def test_a_writer_killed_before_any_record_got_through_is_settled_at_stop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A writer whose every record was dropped, SIGKILLed with no child_exit: its records are counted lost."""
    # No liveness round between the kill and the stop (a kill in the last second, no child_exit hook).
    monkeypatch.setattr(Listener, "LIVENESS_INTERVAL", 3600.0)
    tally = Tally()
    cells = SharedCounters(2)
    hub = forklog.Hub([tally], queue_size=1000, pipe_size=64 << 10).start()
    pids: List[int] = []
    try:
        tally.gate.clear()  # a stalled disk: the backlog, then the pipe, fill up
        for slot, count in ((0, 20_000), (1, 300)):
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
    assert tally.by_pid.get(victim, 0) == 0, "the victim was meant to get nothing through"
    for slot, pid in enumerate(pids):
        accounted = tally.by_pid.get(pid, 0) + final.dropped_by_process.get(pid, 0)
        accounted += final.lost_by_process.get(pid, 0)
        assert accounted == cells[slot], (slot, cells[slot], accounted)
