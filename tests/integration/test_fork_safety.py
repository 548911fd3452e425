"""H6: forking while the listener writes never hangs a child or duplicates a line."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent(
    """
    import logging, os, sys, threading, time
    import forklog

    path, children = sys.argv[1], int(sys.argv[2])
    sink = logging.FileHandler(path)  # a buffered stream the children inherit
    sink.setFormatter(logging.Formatter("%(process)d %(message)s"))
    hub = forklog.Hub([sink]).start()
    forklog.init_worker(hub.queue)
    log = logging.getLogger("parent")
    stop = threading.Event()

    said = [0]

    def chatter():  # keeps the listener inside the sink's write() while we fork
        while not stop.is_set():
            log.info("parent %d", said[0])
            said[0] += 1

    thread = threading.Thread(target=chatter)
    thread.start()
    pids = []
    for n in range(children):
        pid = os.fork()
        if pid == 0:
            logging.getLogger("child").info("child %d done", n)
            # A normal interpreter exit: atexit, logging.shutdown() and the
            # inherited hub's atexit all run here, in the child.
            sys.exit(0)
        pids.append(pid)
    deadline = time.monotonic() + 20
    for pid in pids:
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                assert os.waitstatus_to_exitcode(status) == 0, status
                break
            if time.monotonic() > deadline:
                print("HUNG", pid, flush=True)
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                break
            time.sleep(0.01)
    stop.set()
    thread.join()
    log.info("parent done")
    hub.stop(timeout=10)
    print("CHATTER", said[0], flush=True)
    """
)


def test_children_forked_during_writes_exit_cleanly(tmp_path: Path) -> None:
    """Children forked mid-write exit without hanging, flushing the parent's sink, or stopping the hub."""
    log_file = tmp_path / "fork.log"
    children = 40
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(log_file), str(children)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "HUNG" not in result.stdout
    lines = log_file.read_text().splitlines()
    assert len(lines) == len(set(lines)), "a child flushed a copy of the parent's buffer"
    child_lines = [line for line in lines if " child " in line]
    assert sorted(int(line.split()[2]) for line in child_lines) == list(range(children))
    parent = [int(line.split()[2]) for line in lines if " parent " in line and "done" not in line]
    assert parent == sorted(set(parent)), "the parent's records reordered or doubled"
    # A full pipe may drop some of the chatter (INFO): each drop is reported, none is lost.
    reported = sum(int(line.split()[3]) for line in lines if " forklog: dropped " in line)
    said = int(result.stdout.split("CHATTER ")[1].split()[0])
    assert len(parent) + reported == said, "the parent's records lost without a report"
    assert lines[-1].endswith("parent done")
