"""ASGI servers forklog never forks, under ``forklog run``, as the docs (docs/servers/) run them (issue 24).

``forklog run -- uvicorn app:app --workers 4 --log-config logging.json`` and
``forklog run -- hypercorn -c <config> app:app`` (``workers = 2``, a
``logconfig_dict``): their workers are spawned by ``multiprocessing`` and
each runs the app's logging config again: without forklog, every worker
rotates one 64 KiB file. Under ``forklog run`` every one of them
attaches to the hub at start; the hub, in ``forklog run``'s process, is the
one writer and rotator of the file. Counted: every INFO and WARNING record
of every request once across the rotated files, in order per process; no
process below ``forklog run`` holds the file; TERM stops everything.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import shlex
import signal
import subprocess
import sys
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Set

import pytest

from tests.docs_blocks import docs_block
from tests.integration.gunicorn_proc import REPO, free_port
from tests.support import wait_for

BURST_LINE = re.compile(r"^(\d+) (INFO|WARNING) app burst id=(\S+) i=(\d+)/(\d+) seq=(\d+)$")


def get(port: int, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status
    except (OSError, http.client.HTTPException):  # the worker was killed while serving it
        return 0
    finally:
        conn.close()


LOST = re.compile(r"forklog: lost (\d+) records from pid (\d+) \(killed\)")


def children(pid: int) -> List[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as found:
        return [int(child) for child in found.read().split()]


def descendants(pid: int) -> List[int]:
    """Every process below ``pid``."""
    found: List[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        try:
            tasks = list(Path(f"/proc/{parent}/task").iterdir())
        except OSError:
            continue  # it exited meanwhile
        for task in tasks:
            try:
                with open(task / "children") as children:
                    kids = [int(child) for child in children.read().split()]
            except OSError:
                continue
            found += kids
            todo += kids
    return found


def kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and every process below it: forklog run's command has a process group of its own,
    which killing forklog run's group would miss."""
    for below in [*descendants(pid), pid]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(below, signal.SIGKILL)


def rotated(logs: Path, pattern: str) -> List[Path]:
    """The log files matching ``pattern`` (lock files left out), oldest first: ``x.log.N`` ... ``x.log``."""
    files = [path for path in logs.glob(pattern) if not path.name.endswith(".lock")]
    return sorted(files, key=lambda path: -int(path.suffix[1:]) if path.suffix[1:].isdigit() else 0)


def holders(pids: List[int], directory: Path) -> Set[int]:
    """The processes among ``pids`` that hold a file under ``directory`` open."""
    held = set()
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}").startswith(str(directory)):
                    held.add(pid)
        except OSError:
            continue
    return held


def server_command(server: str, tmp_path: Path, port: int) -> List[str]:
    """The docs' command for ``server``, its config written from the docs beside it, the app ours."""
    (tmp_path / "app.py").write_text("from tests.apps.asgi_app import app  # noqa: F401\n")
    if server == "uvicorn":
        (tmp_path / "logging.json").write_text(docs_block("run-uvicorn-config").text)
    else:
        config = docs_block("run-hypercorn-config").text
        (tmp_path / "hypercorn_conf.py").write_text(config.replace("127.0.0.1:8000", f"127.0.0.1:{port}"))
    return shlex.split(docs_block({"uvicorn": "run-uvicorn", "hypercorn": "run-hypercorn"}[server]).text)


@pytest.mark.parametrize(
    ("server", "workers", "kill"), [("uvicorn", 4, False), ("uvicorn", 4, True), ("hypercorn", 2, False)]
)
def test_workers_write_one_rotated_file_through_the_hub(
    tmp_path: Path, server: str, workers: int, kill: bool
) -> None:
    """Every record of 300 requests once across the rotated files, written by forklog run alone; with a
    worker SIGKILLed mid-load, every answered request's records too, and the victim's gaps reported."""
    logs = tmp_path / "logs"
    logs.mkdir()
    port = free_port()
    env = dict(
        os.environ, FORKLOG_FILE=str(tmp_path / "hub.log"), FORKLOG_CONSOLE="off", PYTHONPATH=str(REPO)
    )
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"  # forklog, uvicorn, hypercorn
    env["UVICORN_PORT"] = str(port)
    command = server_command(server, tmp_path, port)
    assert command[:3] == ["forklog", "run", "--"]
    with open(tmp_path / "stderr", "wb") as stderr:
        proc = subprocess.Popen(command, cwd=tmp_path, env=env, stderr=stderr, start_new_session=True)
    try:
        wait_for(lambda: get(port, "/health") == 200, 60, "the server to serve")
        wait_for(lambda: len(descendants(proc.pid)) >= workers + 1, 30, "the server's workers")
        paths = [f"/burst?n=30&big=0&id=r{r}" for r in range(300)]
        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(get, port, path) for path in paths]
            if kill:  # a worker SIGKILLed a third of the way in (uvicorn starts another)
                wait_for(lambda: sum(f.done() for f in futures) >= 100, 60, "a third of the load")
                victim = max(pid for pid in descendants(proc.pid) if pid not in children(proc.pid))
                os.kill(victim, signal.SIGKILL)
            statuses = [future.result() for future in futures]
        assert statuses.count(200) >= (len(paths) - 16 if kill else len(paths))
        below = descendants(proc.pid)
        assert holders(below, logs) == set(), "a process below forklog run holds the app's file"
        assert holders([proc.pid], logs) == {proc.pid}, "the hub does not write the app's file"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, (tmp_path / "stderr").read_text()[-3000:]
    finally:
        if proc.poll() is None:
            kill_tree(proc.pid)
            proc.wait(10)
    files = rotated(logs, "app.log*")
    assert len(files) >= 4, "the 64 KiB file did not rotate"
    assert all(f.stat().st_size <= 65536 for f in files), "a file grew past maxBytes: two rotators"
    seen: Dict[str, List[int]] = defaultdict(list)
    seqs: Dict[int, List[int]] = defaultdict(list)
    for f in files:  # oldest first
        for line in f.read_text().splitlines():
            match = BURST_LINE.match(line)
            if match:
                seen[match[3]].append(int(match[4]))
                seqs[int(match[1])].append(int(match[6]))
    # i % 3 == 0 is DEBUG (below the config's INFO): 20 of each burst's 30, each once.
    expected = [i for i in range(30) if i % 3]
    for path, status in zip(paths, statuses, strict=True):
        got = seen.get(path.rsplit("id=", 1)[1], [])
        assert len(got) == len(set(got)), f"{path}: a record twice"
        if status == 200:  # answered: every record it logged was in the kernel's hands first
            assert sorted(got) == expected, f"{path}: a record lost"
    assert all(s == sorted(s) for s in seqs.values()), "a process's records out of order across the files"
    assert 2 <= len(seqs) <= workers + (1 if kill else 0) and proc.pid not in seqs
    if kill:  # a request the victim died serving: a hole before its last record arrived is a loss
        lost = {int(m[2]): int(m[1]) for m in LOST.finditer((tmp_path / "hub.log").read_text())}
        holes = 0
        for path, status in zip(paths, statuses, strict=True):
            got = sorted(seen.get(path.rsplit("id=", 1)[1], []))
            if status != 200 and got:
                holes += expected.index(got[-1]) + 1 - len(got)
        assert holes <= sum(lost.values()), (holes, lost)
