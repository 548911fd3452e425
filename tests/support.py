"""Helpers shared by the tests."""

from __future__ import annotations

import logging
import os
import struct
import threading
import time
from collections import Counter
from typing import Any, Callable, Collection, List, Optional, Sequence

import psutil


class Collect(logging.Handler):
    """A sink that keeps every record it is given (in the hub's process)."""

    #: It never blocks: the listener calls it directly, like a file sink.
    forklog_inline = True

    def __init__(self, level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self.records: List[logging.LogRecord] = []
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.seen.set()

    def messages(self) -> List[str]:
        return [r.getMessage() for r in self.records]


class Stall(logging.Handler):
    """A file-like sink that holds the listener until ``go`` is set, so the pipe fills."""

    forklog_inline = True  # called by the listener itself, not from a buffer of its own

    def __init__(self, timeout: float = 30.0) -> None:
        super().__init__()
        self.go = threading.Event()
        self.entered = threading.Event()  # the listener is inside emit()
        self.timeout = timeout

    def emit(self, record: logging.LogRecord) -> None:
        self.entered.set()
        self.go.wait(self.timeout)


class Bad:
    """An object whose __str__ and __repr__ both raise."""

    def __str__(self) -> str:
        raise RuntimeError("no str")

    def __repr__(self) -> str:
        raise RuntimeError("no repr")


class Recursive:
    """An object whose __str__ and __repr__ recurse until RecursionError."""

    def __repr__(self) -> str:
        return repr(self)

    def __str__(self) -> str:
        return str(self)


class SharedCounters:
    """Counters that forked children update and the test reads.

    Read and written with pread/pwrite on a memfd (as the scoreboard is;
    see its note on the "invisible stores" once blamed on shared mappings).
    """

    _COUNTER = struct.Struct("<q")

    def __init__(self, size: int) -> None:
        self.size = size
        self.fd = os.memfd_create("forklog-test-counters")
        os.ftruncate(self.fd, size * 8)

    def __getitem__(self, index: int) -> int:
        return int(self._COUNTER.unpack(os.pread(self.fd, 8, index * 8))[0])

    def __setitem__(self, index: int, value: int) -> None:
        os.pwrite(self.fd, self._COUNTER.pack(value), index * 8)

    def close(self) -> None:
        os.close(self.fd)


def wait_for(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll ``condition`` until it holds; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def check_writer(
    name: str,
    *,
    emitted: int,
    delivered: Sequence[int],
    reported: int,
    lost: int,
    killed: bool,
    dropped: Optional[Collection[int]] = None,
    unreported: Optional[int] = None,
) -> None:
    """One writer's records, by identity: each record carries its index among the writer's log calls.

    ``emitted``: the calls the writer completed, by its own count (a killed
    writer may have had one more under way, which may have arrived).
    ``delivered``: the indices written, in the sink's order. ``reported``
    and ``lost``: what the hub said of this writer (drop reports, loss
    reports). ``dropped``: the indices the writer saw dropped, if it kept
    them; ``unreported``: its count of drops not yet reported when it was
    last seen (a killed writer).

    The hub's own ``lost`` is never counted as delivered: a writer that was
    not killed (it left through forklog's exit path) loses nothing, and a
    killed one loses at most what it had in flight.
    """
    twice = sorted(i for i, times in Counter(delivered).items() if times > 1)
    assert not twice, f"{name}: duplicated: {twice[:10]}"
    assert list(delivered) == sorted(delivered), f"{name}: out of order"
    limit = emitted + 1 if killed else emitted
    strangers = sorted(set(delivered) - set(range(limit)))
    assert not strangers, f"{name}: delivered ids never emitted: {strangers[:10]}"
    missing = set(range(emitted)) - set(delivered)
    if dropped is not None:
        unexplained = sorted(missing - set(dropped))
        assert not unexplained, f"{name}: missing ids the writer did not drop: {unexplained[:10]}"
    if not killed:
        assert lost == 0, f"{name}: lost {lost} records without a kill"
        assert len(missing) == reported, (
            f"{name}: emitted - delivered = {len(missing)} but {reported} reported dropped"
        )
        return
    # The call under way at the kill numbered its record or not: one more at most.
    accounted = len(delivered) + reported + lost
    assert emitted <= accounted <= emitted + 1, (
        f"{name}: unaccounted: emitted {emitted}, delivered {len(delivered)}, "
        f"reported {reported}, lost {lost}"
    )
    if dropped is not None:
        unreported = len(set(dropped)) - reported
    if unreported is not None:
        assert lost <= max(0, unreported) + 1, (
            f"{name}: loss beyond what was in flight: lost {lost}, unreported drops {unreported}"
        )


def in_child(target: Callable[[], None]) -> int:
    """Run ``target`` in a forked child and reap it; it must not raise. The child's pid."""
    pid = forked(target)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, f"the child {pid} failed"
    return pid


def forked(target: Callable[[], None]) -> int:
    """Run ``target`` in a forked child, not waited for: the child's pid (the caller reaps it).

    The child exits 0 when ``target`` returns, 1 when it raises.
    """
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            target()
            code = 0
        finally:
            os._exit(code)
    return pid


def a_bystander_is_heard(hub: Any, arrived: Callable[[str], bool]) -> None:
    """After an attack on ``hub``, another worker's record is written within a second, and the listener lives.

    ``arrived(text)`` says whether a message with ``text`` reached the sinks.
    """
    import forklog

    def log() -> None:
        forklog.init_worker(hub.queue)
        logging.getLogger("bystander").error("bystander after the attack")
        hub.queue.leave(timeout=1.0)

    in_child(log)
    wait_for(lambda: arrived("bystander after the attack"), 1.0, "the other worker's record after the attack")
    assert hub.stats().listener_alive


def wait_settled(hub: Any, pid: int, timeout: float = 20.0) -> None:
    """Wait until ``pid`` (gone) is settled: its pipe ended and the listener closed its account.

    Each writer's pipe ends with it and settles it by itself, maybe before
    the test looks (forklog._master.sources).
    """

    def settled() -> bool:
        receiver = hub._receiver
        open_pipe = receiver is not None and any(s.pid == pid for s in receiver.sources.writers())
        return not open_pipe and pid not in hub._counters.ledger.pids() and not len(hub._backlog)

    wait_for(settled, timeout, f"pid {pid}'s account settled")


class PeakRss:
    """The highest resident size of this process (the master) while it runs, sampled every millisecond."""

    def __init__(self) -> None:
        self._process = psutil.Process()
        self.base: int = self._process.memory_info().rss
        self.peak: int = self.base
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._done.wait(0.001):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def growth(self) -> int:
        """Stop sampling: how far above the start the peak went, in bytes."""
        self._done.set()
        self._thread.join()
        return self.peak - self.base
