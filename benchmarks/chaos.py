"""SIGKILL storm: forklog next to the stdlib cookbook setup, in one run.

    python -m benchmarks.chaos [--kills 200] [--writers 8] [--big-share 0.2] [--no-child-exit]

Each setup gets the same storm: ``--writers`` forked processes log in tight
loops (``--big-share`` of records between 5 and 64 KiB, 1% by default; 20%
keeps the pipe full most of the time, so some writers die before any record
of theirs got through); a random one is SIGKILLed while it logs and
replaced, ``--kills`` times, and the host is told of each death
(gunicorn's ``child_exit``) unless ``--no-child-exit``. Every writer's
emitted count, those of the writers that never got a record through
included, is compared with what was written plus what was reported.
Printed side by side:

* stalls: kills after which nothing arrived for 2 s while writers were
  logging (the storm stops there: delivery is wedged);
* listener deaths: the listener thread was dead at the end;
* records emitted by the writers, written by the sink, reported dropped or
  lost by the hub, and lost without a report;
* time to stop the listener (10 s at most, then "hung").

The cookbook is ``multiprocessing.Queue(10_000)`` + ``QueueListener``, with
``QueueHandler`` in the children and ``close(); join_thread()`` before a
survivor exits, as its documentation suggests.
"""

from __future__ import annotations

import abc
import argparse
import logging
import logging.handlers
import multiprocessing
import os
import random
import signal
import struct
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import forklog

COUNTER = struct.Struct("<q")
STORM, EXIT = 0, 1


class Tally(logging.Handler):
    """The sink: counts records per pid and forklog's own reports."""

    def __init__(self) -> None:
        super().__init__()
        self.by_pid: Dict[int, int] = {}
        self.total = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.name != "forklog":
            self.by_pid[record.process or 0] = self.by_pid.get(record.process or 0, 0) + 1
            self.total += 1


class Board:
    """Shared with the writers: the mode (slot 0) and how many records each emitted.

    pread/pwrite on a memfd, as the scoreboard (see its note on the
    "invisible stores" once blamed on shared mappings).
    """

    def __init__(self, slots: int) -> None:
        self.fd = os.memfd_create("chaos-board")
        os.ftruncate(self.fd, 8 * (slots + 1))

    def _get(self, index: int) -> int:
        return int(COUNTER.unpack(os.pread(self.fd, 8, 8 * index))[0])

    def _set(self, index: int, value: int) -> None:
        os.pwrite(self.fd, COUNTER.pack(value), 8 * index)

    @property
    def mode(self) -> int:
        return self._get(0)

    @mode.setter
    def mode(self, value: int) -> None:
        self._set(0, value)

    def emitted(self, k: int) -> int:
        return self._get(k + 1)

    def set_emitted(self, k: int, value: int) -> None:
        self._set(k + 1, value)


class Setup(abc.ABC):
    """One logging setup under test."""

    name = ""

    @abc.abstractmethod
    def start(self, sink: logging.Handler) -> None: ...

    @abc.abstractmethod
    def init_child(self) -> None: ...

    @abc.abstractmethod
    def exit_child(self) -> None: ...

    @abc.abstractmethod
    def exited(self, pid: int) -> None: ...

    @abc.abstractmethod
    def listener_alive(self) -> bool: ...

    @abc.abstractmethod
    def stop(self) -> Tuple[float, Dict[int, int], Dict[int, int]]:
        """Stop the listener: (seconds it took, drops reported by pid, losses reported by pid)."""


class Cookbook(Setup):
    name = "stdlib cookbook"

    def start(self, sink: logging.Handler) -> None:
        self.queue: Any = multiprocessing.get_context("fork").Queue(10_000)
        self.listener = logging.handlers.QueueListener(self.queue, sink, respect_handler_level=True)
        self.listener.start()

    def init_child(self) -> None:
        # QueueHandler prints a traceback per record it cannot enqueue: keep it off the screen.
        logging.raiseExceptions = False
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        root = logging.getLogger()
        root.handlers[:] = [logging.handlers.QueueHandler(self.queue)]
        root.setLevel(logging.INFO)

    def exit_child(self) -> None:
        self.queue.close()
        self.queue.join_thread()

    def exited(self, pid: int) -> None:
        pass

    def listener_alive(self) -> bool:
        thread = self.listener._thread
        return thread is not None and thread.is_alive()

    def stop(self) -> Tuple[float, Dict[int, int], Dict[int, int]]:
        return _timed(self.listener.stop), {}, {}


class Forklog(Setup):
    name = "forklog"

    def start(self, sink: logging.Handler) -> None:
        self.hub = forklog.Hub([sink]).start()

    def init_child(self) -> None:
        forklog.init_worker(self.hub.queue, level=logging.INFO)

    def exit_child(self) -> None:
        pass  # nothing is buffered in a worker: the pipe already has it all

    def exited(self, pid: int) -> None:
        self.hub.process_exited(pid)

    def listener_alive(self) -> bool:
        return self.hub.stats().listener_alive

    def stop(self) -> Tuple[float, Dict[int, int], Dict[int, int]]:
        result: List[forklog.HubStats] = []

        def stop() -> None:
            stats = self.hub.stop(timeout=5)
            if stats is not None:
                result.append(stats)

        seconds = _timed(stop)
        final = result[0] if result else self.hub.stats()
        self.sink_dropped = sum(final.dropped_by_sink.values())  # records a sink took and could not write
        return seconds, final.dropped_by_process, final.lost_by_process


def _timed(call: Callable[[], object], limit: float = 10.0) -> float:
    """Seconds ``call`` took, or infinity when it did not return within ``limit``."""
    thread = threading.Thread(target=call, daemon=True)
    started = time.monotonic()
    thread.start()
    thread.join(limit)
    return float("inf") if thread.is_alive() else time.monotonic() - started


#: The share of records between 5 and 64 KiB (``--big-share``).
BIG_SHARE = 0.01


def _writer(setup: Setup, board: Board, k: int) -> None:
    setup.init_child()
    log = logging.getLogger("chaos")
    rng = random.Random(k)
    emitted = 0
    while board.mode == STORM:
        big = "z" * rng.randint(5 << 10, 64 << 10) if rng.random() < BIG_SHARE else ""
        log.info("storm k=%d i=%d %s", k, emitted, big)
        emitted += 1
        board.set_emitted(k, emitted)
    setup.exit_child()


def _spawn(setup: Setup, board: Board, k: int) -> int:
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            _writer(setup, board, k)
        except BaseException:  # noqa: BLE001 - a child never returns into the benchmark
            code = 1
        finally:
            os._exit(code)
    return pid


def _reap(pid: int, limit: float) -> bool:
    """Wait for ``pid``; SIGKILL it after ``limit`` seconds. True if it exited by itself."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        done, _status = os.waitpid(pid, os.WNOHANG)
        if done:
            return True
        time.sleep(0.005)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return False


def storm(setup: Setup, writers: int, kills: int, seed: int, child_exit: bool = True) -> Dict[str, Any]:
    sink = Tally()
    board = Board(writers + kills)
    setup.start(sink)
    rng = random.Random(seed)
    live = {k: _spawn(setup, board, k) for k in range(writers)}
    killed: Dict[int, int] = {}
    stalls = 0
    next_k = writers
    started = time.monotonic()
    for _ in range(kills):
        victim = rng.choice(sorted(live))
        target = board.emitted(victim) + rng.randint(1, 400)
        deadline = time.monotonic() + 2.0
        while board.emitted(victim) < target and time.monotonic() < deadline:
            time.sleep(0.0005)
        pid = live.pop(victim)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        if child_exit:
            setup.exited(pid)
        killed[victim] = pid
        live[next_k] = _spawn(setup, board, next_k)
        next_k += 1
        arrived = sink.total
        deadline = time.monotonic() + 2.0
        while sink.total == arrived and time.monotonic() < deadline:
            time.sleep(0.001)
        if sink.total == arrived:
            stalls += 1
            break  # wedged: nothing more will arrive
    storm_seconds = time.monotonic() - started
    board.mode = EXIT
    clean_exits = sum(_reap(pid, 5.0) for pid in live.values())
    for pid in live.values():
        if child_exit:
            setup.exited(pid)
    # Let the listener catch up before stopping it.
    settle = time.monotonic() + 3.0
    last = -1
    while sink.total != last and time.monotonic() < settle:
        last = sink.total
        time.sleep(0.2)
    alive = setup.listener_alive()
    stop_seconds, dropped, lost = setup.stop()
    emitted = sum(board.emitted(k) for k in range(next_k))
    written = sink.total
    reported_dropped = sum(dropped.values())
    reported_lost = sum(lost.values())
    every = {**killed, **live}
    unreported = 0
    for k, pid in every.items():
        accounted = sink.by_pid.get(pid, 0) + dropped.get(pid, 0) + lost.get(pid, 0)
        unreported += max(0, board.emitted(k) - accounted)
    # What the sink itself reported it could not write (counted by sink, not by pid).
    sink_dropped = int(getattr(setup, "sink_dropped", 0))
    unreported = max(0, unreported - sink_dropped)
    return {
        "kills done": f"{len(killed)}/{kills}",
        "storm seconds": f"{storm_seconds:.1f}",
        "stalls": stalls,
        "listener deaths": 0 if alive else 1,
        "survivors that exited cleanly": f"{clean_exits}/{len(live)}",
        "records emitted": emitted,
        "records written": written,
        "drops reported": reported_dropped,
        "losses reported": reported_lost,
        "sink drops reported": sink_dropped,
        "lost without a report": unreported,
        "time to stop (s)": "hung (>10 s)" if stop_seconds == float("inf") else f"{stop_seconds:.2f}",
    }


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kills", type=int, default=200)
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--only", choices=["forklog", "cookbook"], help="run one setup")
    parser.add_argument("--big-share", type=float, default=0.01, help="share of records of 5-64 KiB")
    parser.add_argument("--no-child-exit", action="store_true", help="never tell the hub a writer died")
    args = parser.parse_args(argv)
    global BIG_SHARE  # noqa: PLW0603 - read by the forked writers
    BIG_SHARE = args.big_share
    results = {}
    setups = [s for s in (Cookbook(), Forklog()) if args.only in (None, s.name.split()[-1])]
    for setup in setups:
        results[setup.name] = storm(setup, args.writers, args.kills, args.seed, not args.no_child_exit)
    told = "no child_exit" if args.no_child_exit else "child_exit on each death"
    print(
        f"SIGKILL storm: {args.writers} writers, {args.kills} kills, {args.big_share:.0%} of records "
        f"5-64 KiB, {told}; "
        f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs"
    )
    names = list(results)
    rows = list(results[names[0]])
    width = max(len(r) for r in rows) + 2
    print("".rjust(width) + "".join(n.rjust(18) for n in names))
    for row in rows:
        print(row.ljust(width) + "".join(str(results[n][row]).rjust(18) for n in names))
    ours = results.get("forklog")
    if ours is None:
        return 0
    ok = ours["stalls"] == 0 and ours["listener deaths"] == 0 and ours["lost without a report"] == 0
    ok = ok and ours["kills done"] == f"{args.kills}/{args.kills}"
    print("forklog:", "OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
