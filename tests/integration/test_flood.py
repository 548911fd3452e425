"""A flood into a stalled sink: memory stays bounded, log calls keep returning, drops are counted."""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import List

import psutil

import forklog
from forklog._master.listener import Listener
from tests.support import SharedCounters, wait_for

WRITERS = 4
MiB = 1 << 20


class Stalled(logging.Handler):
    """A sink that hangs until released, like a disk that stopped answering."""

    forklog_inline = True  # a file sink: written by the listener itself

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.gate.wait(60)
        if record.name != "forklog":
            self.count += 1


#: A call that waited for room in the pipe takes keep_wait (0.1 s); scheduling alone rarely does.
SLOW = 0.05


def flood(hub: forklog.Hub, calls: SharedCounters, k: int) -> None:
    forklog.init_worker(hub.queue, level=logging.INFO)
    log = logging.getLogger("flood")
    n = 0
    slow = 0
    clock = time.perf_counter
    while calls[WRITERS] == 0:  # until the test says stop
        started = clock()
        log.info("flood k=%d n=%d %s", k, n, "p" * 100)
        if clock() - started >= SLOW:
            slow += 1
            calls[WRITERS + 1 + k] = slow
        n += 1
        calls[k] = n
    hub.queue.flush(timeout=10)  # report the drops before leaving


def test_flood_into_a_stalled_sink() -> None:
    """RSS of master and workers stays flat; INFO calls never wait; every record is written or counted."""
    sink = Stalled()
    calls = SharedCounters(2 * WRITERS + 1)  # calls made; the stop flag; calls that took >= SLOW
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
        # INFO calls never wait: onto a pipe that stays full, a waiting call would take keep_wait each.
        for k in range(WRITERS):
            assert calls[WRITERS + 1 + k] <= calls[k] // 1000, (
                f"writer {k}: {calls[WRITERS + 1 + k]} slow calls"
            )
    finally:
        calls[WRITERS] = 1
        sink.gate.set()
        for pid in pids:

            def exited(pid: int = pid) -> bool:
                return os.waitpid(pid, os.WNOHANG)[0] == pid

            wait_for(exited, 30, f"writer {pid} to exit")
            hub.process_exited(pid)
        stats = hub.stop(timeout=30)
    emitted = sum(calls[k] for k in range(WRITERS))
    assert stats is not None
    assert stats.dropped > 0
    assert sink.count + stats.dropped + stats.lost == emitted
