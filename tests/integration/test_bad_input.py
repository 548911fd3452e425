"""Bad timing from the application, in real child processes: threads, signals, interpreter exit.

Every child runs ``forklog.init_worker(hub.queue)`` and writes its stderr to
a file of the test's: a child must exit with status 0, within a deadline,
having written nothing there (no traceback, no "Exception ignored").
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import logging
import multiprocessing
import os
import signal
import struct
import subprocess
import sys
import threading
import time
import types
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

import forklog
from forklog._master.sinks import RotatingFileSink
from forklog._wire import framing
from tests.support import Collect, Stall, wait_for, wait_settled

ROOT = Path(__file__).resolve().parents[2]
#: How long a child may take to do its work and exit.
DEADLINE = 30.0


def _stderr_to(path: str) -> None:
    """In a child: fd 2 (and so sys.stderr, tracebacks, "Exception ignored") goes to ``path``."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 2)
    os.close(fd)


def _finish(process: Any, stderr: Path) -> None:
    """The child exits with status 0 within the deadline and leaves nothing on stderr."""
    process.join(DEADLINE)
    if process.is_alive():
        process.kill()
        process.join(5)
        raise AssertionError(f"the child hung; its stderr: {stderr.read_text(errors='replace')!r}")
    assert process.exitcode == 0, stderr.read_text(errors="replace")
    assert stderr.read_text(errors="replace") == ""


def _settled(hub: forklog.Hub, pid: int) -> forklog.HubStats:
    """Settle ``pid``'s account (it has exited) and return the stats once the listener has."""
    hub.process_exited(pid)
    wait_settled(hub, pid)
    return hub.stats()


# -- a thread started after fork ----------------------------------------------------

THREAD_RECORDS = 300


def thread_child(queue: forklog.Channel, stderr: str) -> None:
    """In the child: a thread started after the child began logs, small records and a large one."""
    _stderr_to(stderr)
    forklog.init_worker(queue)
    log = logging.getLogger("bad_input.thread")

    def work() -> None:
        for i in range(THREAD_RECORDS):
            log.warning("thread %d %s", i, "t" * 9000 if i == 7 else "")

    thread = threading.Thread(target=work, name="started-after-fork")
    thread.start()
    thread.join()


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_a_thread_started_in_the_child_logs(method: str, tmp_path: Path) -> None:
    """Every record of a thread the child started arrives once, in order, with the thread's name."""
    collect = Collect()
    stderr = tmp_path / "stderr"
    ctx: Any = multiprocessing.get_context(method)
    with forklog.Hub([("collect", collect)]) as hub:
        process = ctx.Process(target=thread_child, args=(hub.queue, str(stderr)))
        process.start()
        _finish(process, stderr)
        assert process.pid is not None
        stats = _settled(hub, process.pid)
    mine = [r for r in collect.records if r.name == "bad_input.thread"]
    assert [int(r.getMessage().split()[1]) for r in mine] == list(range(THREAD_RECORDS))
    assert {(r.threadName, r.process) for r in mine} == {("started-after-fork", process.pid)}
    assert mine[7].getMessage().endswith("t" * 9000)
    assert stats.lost == 0 and stats.dropped == 0 and stats.incomplete_by_process == {}


# -- a signal handler that logs while the main thread logs ----------------------------

SIGNALS = 400


def signal_child(queue: forklog.Channel, stderr: str, result: str, go: Any) -> None:
    """In the child: SIGALRM every 0.5 ms logs while the main thread logs in a tight loop."""
    _stderr_to(stderr)
    forklog.init_worker(queue)
    log = logging.getLogger("bad_input.signal")
    fired = 0

    def on_alarm(signum: int, frame: Optional[types.FrameType]) -> None:
        nonlocal fired
        fired += 1
        log.info("signal %d", fired)

    signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, 0.0005, 0.0005)
    sent = 0
    deadline = time.monotonic() + DEADLINE / 2
    while fired < SIGNALS and time.monotonic() < deadline:
        # Records of one frame: each one either goes out whole or is a drop.
        log.info("loop %d %s", sent, "x" * (sent % 4 * 900))
        sent += 1
    signal.setitimer(signal.ITIMER_REAL, 0, 0)
    Path(result).write_text(json.dumps({"sent": sent, "fired": fired}))
    go.wait(DEADLINE)  # the test lets the sink go: the drops are reported before the exit
    assert queue.flush(DEADLINE / 2), "the drop counts never went out"


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_a_signal_handler_logs_while_the_main_thread_logs(method: str, tmp_path: Path) -> None:
    """No deadlock; onto a full pipe, each record of both arrives once or is a reported drop, none lost."""
    collect = Collect()
    stall = Stall(DEADLINE)
    stderr, result = tmp_path / "stderr", tmp_path / "result.json"
    ctx: Any = multiprocessing.get_context(method)
    go = ctx.Event()
    with forklog.Hub([("stall", stall), ("collect", collect)], queue_size=1, pipe_size=4096) as hub:
        process = ctx.Process(target=signal_child, args=(hub.queue, str(stderr), str(result), go))
        process.start()
        try:
            wait_for(result.exists, DEADLINE, "the child's loop to end")
        finally:
            stall.go.set()
            go.set()
        _finish(process, stderr)
        assert process.pid is not None
        stats = _settled(hub, process.pid)
    counts = json.loads(result.read_text())
    assert counts["fired"] >= SIGNALS, counts
    mine = [r.getMessage().split(" ", 2)[:2] for r in collect.records if r.name == "bad_input.signal"]
    assert len({tuple(m) for m in mine}) == len(mine), "a record arrived twice"
    assert stats.dropped > 0, "the pipe never filled"
    # A record of several frames (512-byte frames: FORKLOG_PORTABLE) can be cut short on the full
    # pipe after its first frame: the master sets it aside (incomplete), its writer counts it dropped.
    cut = sum(stats.incomplete_by_process.values())
    assert stats.lost == 0, f"lost without a kill: {stats}"
    assert len(mine) + stats.dropped == counts["sent"] + counts["fired"], stats
    assert stats.bad_records == 0
    if framing.PIPE_BUF >= 4096:
        assert cut == 0, "a record of one frame cannot be cut short"


# -- interpreter shutdown ------------------------------------------------------------

SHUTDOWN_CASES = ["atexit", "del", "daemon", "all"]
SHUTDOWN_LOGGER = "bad_input.exit"


class LogsWhenCollected:
    """Logs from ``__del__``: kept by a module, it goes when the interpreter tears the modules down."""

    def __init__(self, log: logging.Logger, pad: str) -> None:
        self.log = log
        self.pad = pad

    def __del__(self) -> None:
        self.log.error("from __del__ %s", self.pad)


def shutdown_child(queue: forklog.Channel, case: str, stderr: str) -> None:
    """In the child: log from atexit, __del__ and a daemon thread, then let the interpreter exit."""
    _stderr_to(stderr)
    log = logging.getLogger(SHUTDOWN_LOGGER)
    # "all": records of two frames, so that each one publishes its number under the channel's lock.
    pad = "p" * 5000 if case == "all" else ""
    if case in ("atexit", "all"):
        atexit.register(lambda: log.error("from atexit %s", pad))  # registered before init_worker
    forklog.init_worker(queue)
    if case in ("del", "all"):
        # In a module of its own: a frozen daemon thread's frame keeps this module's globals alive,
        # and Python runs no __del__ of an object that is still referenced at exit.
        holder = types.ModuleType("bad_input_exit_holder")
        holder.__dict__["kept"] = LogsWhenCollected(log, pad)
        sys.modules[holder.__name__] = holder
    if case in ("daemon", "all"):
        started = threading.Event()
        begun = os.open(Path(stderr).with_name("daemon-begun"), os.O_WRONLY | os.O_CREAT, 0o644)

        def chatter() -> None:
            i = 0
            while True:
                os.pwrite(begun, struct.pack("<q", i), 0)  # record i is about to be logged
                log.warning("daemon %d %s", i, pad)
                i += 1
                if i == 100:
                    started.set()

        threading.Thread(target=chatter, name="chatter", daemon=True).start()
        started.wait(DEADLINE)


def shutdown_master(method: str, case: str, workdir: str) -> None:
    """A fresh interpreter owning a hub (a gunicorn master, in short); writes what it saw to ``workdir``."""
    out = Path(workdir)
    sink = RotatingFileSink(out / "records.jsonl", maxBytes=0, encoding="utf-8", errors="backslashreplace")
    sink.setFormatter(forklog.JSONFormatter())
    # ERROR records (atexit, __del__) may wait for room in the pipe; the daemon's WARNINGs are dropped.
    # Pipes of 1 MiB: the daemon thread's first 100 records of 5 KB fit while the listener writes.
    hub = forklog.Hub([("json", sink)], keep_wait=5.0, pipe_size=1 << 20).start()
    stderr = str(out / "child-stderr")
    started = time.monotonic()
    if method == "fork":
        pid = os.fork()
        if pid == 0:
            # The child leaves as a gunicorn worker does: SystemExit all the way up, then a
            # real interpreter exit (atexit, module teardown, daemon threads frozen).
            shutdown_child(hub.queue, case, stderr)
            sys.exit(0)
        statuses: List[int] = []

        def reaped() -> bool:
            done, status = os.waitpid(pid, os.WNOHANG)
            statuses.extend([status] if done else [])
            return bool(done)

        try:
            wait_for(reaped, DEADLINE, "the child to exit", interval=0.01)
            exitcode: Optional[int] = os.waitstatus_to_exitcode(statuses[0])
        except AssertionError:  # hung: the test says so, with the child's stderr
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            exitcode = None
    else:
        # A spawned child ends in multiprocessing's spawn_main: sys.exit(), a real interpreter exit.
        process = multiprocessing.get_context("spawn").Process(
            target=shutdown_child, args=(hub.queue, case, stderr)
        )
        process.start()
        process.join(DEADLINE)
        if process.is_alive():
            process.kill()
            process.join()
            exitcode = None
        else:
            exitcode = process.exitcode
        assert process.pid is not None
        pid = process.pid
    elapsed = time.monotonic() - started
    hub.process_exited(pid)
    # Raises (the master exits non-zero, its stderr in the test's failure) rather than report unsettled.
    wait_settled(hub, pid)
    stats = hub.stop(timeout=10)
    assert stats is not None
    report = {"pid": pid, "exitcode": exitcode, "elapsed": elapsed, "stats": dataclasses.asdict(stats)}
    (out / "result.json").write_text(json.dumps(report))


@pytest.mark.parametrize("case", SHUTDOWN_CASES)
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_logging_during_interpreter_shutdown(method: str, case: str, tmp_path: Path) -> None:
    """Records from atexit, a __del__ at exit, a daemon thread arrive or are counted; the exit is clean."""
    code = (
        "from tests.integration.test_bad_input import shutdown_master; "
        f"shutdown_master({method!r}, {case!r}, {str(tmp_path)!r})"
    )
    master = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])},
        capture_output=True,
        text=True,
        timeout=DEADLINE * 3,
        check=False,
    )
    assert master.returncode == 0, master.stderr
    report = json.loads((tmp_path / "result.json").read_text())
    child_stderr = (tmp_path / "child-stderr").read_text(errors="replace")
    assert report["exitcode"] is not None, f"the child hung at exit; its stderr: {child_stderr!r}"
    assert (report["exitcode"], child_stderr) == (0, "")
    stats: Dict[str, Any] = report["stats"]
    records = [
        json.loads(line) for line in (tmp_path / "records.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    mine = [r["message"] for r in records if r["logger"] == SHUTDOWN_LOGGER]
    assert all(r["pid"] == report["pid"] for r in records if r["logger"] == SHUTDOWN_LOGGER)
    pad = "p" * 5000 if case == "all" else ""
    expected = {"atexit": [f"from atexit {pad}"], "del": [f"from __del__ {pad}"], "daemon": []}
    for message in expected.get(case, expected["atexit"] + expected["del"]):
        assert mine.count(message) == 1, (message[:20], [m[:20] for m in mine if not m.startswith("daemon")])
    daemon = [int(m.split()[1]) for m in mine if m.startswith("daemon")]
    dropped = sum(stats["dropped_by_level"].values())
    lost = sum(stats["lost_by_process"].values())
    if case in ("daemon", "all"):
        # Records 0 .. begun-1 of the daemon thread were logged, and perhaps the one it was
        # writing when the interpreter froze it: each arrived, in order, or was dropped on a
        # full pipe (and reported), or was cut short by the freeze (and counted as lost).
        (begun,) = struct.unpack("<q", (tmp_path / "daemon-begun").read_bytes())
        assert len(daemon) >= 100 and daemon == sorted(set(daemon))
        assert begun <= len(daemon) + dropped + lost <= begun + 1, (begun, len(daemon), stats)
        assert sum(stats["incomplete_by_process"].values()) <= 1
    else:
        assert daemon == [] and (dropped, lost) == (0, 0), stats
    assert stats["bad_records"] == 0
