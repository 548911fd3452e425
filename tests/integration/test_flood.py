"""A flood into a stalled sink: memory stays bounded, log calls keep returning, drops are counted."""

from __future__ import annotations

import logging
import os
import re
import threading
from typing import Dict, List

import psutil

import forklog
from forklog._master.listener import Listener
from tests.support import SharedCounters, check_writer, wait_for

WRITERS = 4
MiB = 1 << 20


class Stalled(logging.Handler):
    """A sink that hangs until released, like a disk that stopped answering."""

    forklog_inline = True  # a file sink: written by the listener itself

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        #: pid -> the index ``n`` of each record written, in order.
        self.delivered: Dict[int, List[int]] = {}

    def emit(self, record: logging.LogRecord) -> None:
        self.gate.wait(60)
        if record.name != "forklog":
            match = INDEX.search(record.getMessage())
            assert match is not None
            self.delivered.setdefault(record.process or 0, []).append(int(match[1]))


INDEX = re.compile(r" n=(\d+) ")


def flood(hub: forklog.Hub, calls: SharedCounters, k: int) -> None:
    forklog.init_worker(hub.queue, level=logging.INFO)
    log = logging.getLogger("flood")
    n = 0
    while calls[WRITERS] == 0:  # until the test says stop
        log.info("flood k=%d n=%d %s", k, n, "p" * 100)
        n += 1
        calls[k] = n
        # Calls that entered the channel's wait for room in the pipe (INFO never may).
        calls[WRITERS + 1 + k] = hub.queue.waited
    hub.queue.leave(timeout=10)  # forklog's exit path: report the drops, mark the exit


def test_flood_into_a_stalled_sink() -> None:
    """RSS of master and workers stays flat; INFO calls never wait; every record is written or counted."""
    sink = Stalled()
    calls = SharedCounters(2 * WRITERS + 1)  # calls made; the stop flag; calls that waited
    hub = forklog.Hub([sink]).start()
    master = psutil.Process()
    pids: List[int] = []
    try:
        before = master.memory_info().rss
        for k in range(WRITERS):
            pid = os.fork()
            if pid == 0:
                try:
                    flood(hub, calls, k)
                finally:
                    os._exit(0)
            pids.append(pid)
        # The sink is stalled: only a log call that never waits can keep this pace.
        wait_for(lambda: all(calls[k] >= 20_000 for k in range(WRITERS)), 60, "20k calls per writer")
        early = [psutil.Process(pid).memory_info().rss for pid in pids]
        master_early = master.memory_info().rss
        marks = [calls[k] for k in range(WRITERS)]
        wait_for(lambda: all(calls[k] >= marks[k] + 50_000 for k in range(WRITERS)), 120, "50k more calls")
        late = [psutil.Process(pid).memory_info().rss for pid in pids]
        master_late = master.memory_info().rss
        assert master_late - before < 32 * MiB, "the master buffered more than its bound"
        assert master_late - master_early < 4 * MiB, "the master kept growing"
        for k in range(WRITERS):
            assert late[k] - early[k] < 2 * MiB, f"writer {k} kept growing"
        # The stalled listener holds one batch (counted in the depth); behind it the
        # backlog is full and held at its bound.
        assert hub.queue_size < hub.stats().queue_depth <= hub.queue_size + Listener.BATCH
        # INFO calls never wait: not one entered the channel's wait for room.
        for k in range(WRITERS):
            assert calls[WRITERS + 1 + k] == 0, f"writer {k}: {calls[WRITERS + 1 + k]} INFO calls waited"
    finally:
        calls[WRITERS] = 1
        sink.gate.set()
        for pid in pids:

            def exited(pid: int = pid) -> bool:
                return os.waitpid(pid, os.WNOHANG)[0] == pid

            wait_for(exited, 30, f"writer {pid} to exit")
            hub.process_exited(pid)
        stats = hub.stop(timeout=30)
    assert stats is not None
    assert stats.dropped > 0
    # Every writer flushed and left: nothing lost, each record written once, in order, or reported dropped.
    for k, pid in enumerate(pids):
        check_writer(
            f"writer {k} (pid {pid})",
            emitted=calls[k],
            delivered=sink.delivered.get(pid, []),
            reported=stats.dropped_by_process.get(pid, 0),
            lost=stats.lost_by_process.get(pid, 0),
            killed=False,
        )
    assert set(sink.delivered) <= set(pids), "records from a process that was not a writer"
    assert stats.lost == 0, f"lost {stats.lost_by_process}"
