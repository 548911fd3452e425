"""Celery's prefork pool with a real Redis broker, its own logging unchanged (issue 24).

``forklog run -- celery -A celery_proj worker -c 4``: the project's
``setup_logging`` runs ``dictConfig`` with a 64 KiB rotating file, tasks log
through ``get_task_logger``; without forklog the four children write and
rotate that file together. And without the wrapper: the worker's main
process starts the hub in ``worker_init`` and the config names
``forklog.Handler``. Counted: every task's records once, in order, no child
holding a log file.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import pytest

from tests.docs_blocks import docs_block
from tests.integration.gunicorn_proc import REPO, free_port
from tests.integration.test_run_servers import descendants, holders, kill_tree, rotated
from tests.support import wait_for

TASK_LINE = re.compile(r"^(\d+) INFO celery_proj task (\d+) record (\d+) pid (\d+)$")
TASK_IN_HUB = re.compile(r" \[INFO\] celery_proj (\d+) \S+ - task (\d+) record (\d+) pid (\d+)$")
REDIS = shutil.which("redis-server") or "/usr/bin/redis-server"
TASKS, RECORDS = 40, 50


def answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[str]:
    """A real redis-server on a free loopback port, nothing saved."""
    port = free_port()
    proc = subprocess.Popen(
        [
            REDIS,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for(lambda: answers(port), 20, "redis-server")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


def celery_project(tmp_path: Path, broker: str) -> Tuple[Path, Dict[str, str]]:
    """The logs' folder, and the environment of the Celery project (forklog and celery on PATH)."""
    logs = tmp_path / "logs"
    logs.mkdir()
    env = dict(
        os.environ,
        BROKER=broker,
        TASK_LOG=str(logs / "tasks.log"),
        FORKLOG_FILE=str(logs / "hub.log"),
        FORKLOG_CONSOLE="off",
        PYTHONPATH=os.pathsep.join([str(REPO / "tests" / "apps"), str(REPO)]),
    )
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return logs, env


@pytest.mark.parametrize("how", ["forklog run", "worker_init"])
def test_celery_prefork_children_write_through_one_hub(tmp_path: Path, broker: str, how: str) -> None:
    logs, env = celery_project(tmp_path, broker)
    command = shlex.split(docs_block("run-celery").text)  # docs/servers/celery.md's command
    if how == "worker_init":
        project = (REPO / "tests" / "apps" / "celery_proj.py").read_text()
        assert docs_block("run-celery-worker-init").text in project, "the docs show another hook"
        env["CELERY_FORKLOG"] = "worker_init"
        command = command[command.index("--") + 1 :]
    with open(tmp_path / "stderr", "wb") as stderr:
        proc = subprocess.Popen(command, cwd=tmp_path, env=env, stderr=stderr, start_new_session=True)
    try:
        wait_for(lambda: len(descendants(proc.pid)) >= 4, 60, "celery's pool")
        send = f"import celery_proj\nfor n in range({TASKS}):\n    celery_proj.work.delay(n, {RECORDS})\n"
        subprocess.run(
            [sys.executable, "-E", "-c", send], env=env, cwd=REPO / "tests" / "apps", check=True, timeout=60
        )

        def done() -> List[str]:
            text = "\n".join(f.read_text() for f in logs.glob("*.log*") if not f.name.endswith(".lock"))
            return [line for line in text.splitlines() if f"record {RECORDS - 1} pid" in line]

        wait_for(lambda: len(done()) == TASKS, 60, "every task's last record")
        below = descendants(proc.pid)
        assert holders(below, logs) == set(), "a child holds a log file"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) in (0, -signal.SIGTERM), (tmp_path / "stderr").read_text()[-3000:]
    finally:
        if proc.poll() is None:
            kill_tree(proc.pid)
            proc.wait(10)
    by_task: Dict[int, List[int]] = defaultdict(list)
    pids = set()
    pattern = TASK_LINE if how == "forklog run" else TASK_IN_HUB
    files = rotated(logs, "*.log*")
    for f in files:
        for line in f.read_text().splitlines():
            match = pattern.search(line)
            if match:
                assert match[1] == match[4], "a record's process is the one that logged it"
                by_task[int(match[2])].append(int(match[3]))
                pids.add(int(match[4]))
    assert dict(by_task) == {n: list(range(RECORDS)) for n in range(TASKS)}, (
        "a record lost, doubled or reordered"
    )
    assert 1 <= len(pids) <= 4 and proc.pid not in pids, "the records were not made by the pool's children"
    if how == "forklog run":
        assert all(f.stat().st_size <= 65536 for f in files)
    # Each task's traceback whole, in the lines after its record (a rotation never splits a record).
    text = "".join(f.read_text() for f in files)
    for n in range(TASKS):
        (after,) = re.findall(rf"task {n} traceback\n((?:(?!\d+ [A-Z]+ |\S+ \S+ \[).*\n)+)", text)
        assert after.startswith("Traceback (most recent call last):\n"), after
        assert after.rstrip().endswith(f"ValueError: task {n} failed"), after


SLOW_LINE = re.compile(r"^(\d+) INFO celery_proj slow record (\d+) pid (\d+)$")
LOST = re.compile(r"forklog: lost (\d+) records from pid (\d+) \(killed\)")


def test_a_celery_child_sigkilled_mid_task_is_accounted(tmp_path: Path, broker: str) -> None:
    """Under forklog run, a prefork child SIGKILLed in the middle of a task: what it logged arrived, once, and
    a hole before its last record is no more than the loss the hub reports; the pool's next tasks log."""
    logs, env = celery_project(tmp_path, broker)
    command = shlex.split(docs_block("run-celery").text)
    with open(tmp_path / "stderr", "wb") as stderr:
        proc = subprocess.Popen(command, cwd=tmp_path, env=env, stderr=stderr, start_new_session=True)

    def slow_lines() -> List[re.Match[str]]:
        text = (logs / "tasks.log").read_text() if (logs / "tasks.log").exists() else ""
        return [m for m in map(SLOW_LINE.match, text.splitlines()) if m]

    def send(code: str) -> None:
        script = f"import celery_proj\n{code}\n"
        subprocess.run([sys.executable, "-E", "-c", script], env=env, cwd=REPO / "tests" / "apps", check=True)

    try:
        wait_for(lambda: len(descendants(proc.pid)) >= 4, 60, "celery's pool")
        send("celery_proj.slow.delay(500)")
        wait_for(lambda: len(slow_lines()) >= 20, 60, "the slow task's first records")
        victim = int(slow_lines()[0][3])
        os.kill(victim, signal.SIGKILL)
        send("for n in range(10):\n    celery_proj.work.delay(n, 20)")

        def finished() -> int:
            return len(re.findall(r" task \d+ record 19 pid ", (logs / "tasks.log").read_text()))

        wait_for(lambda: finished() == 10, 60, "the tasks after the kill")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, (tmp_path / "stderr").read_text()[-3000:]
    finally:
        if proc.poll() is None:
            kill_tree(proc.pid)
            proc.wait(10)
    got = [int(m[2]) for m in slow_lines() if int(m[3]) == victim]
    assert len(got) == len(set(got)) and got == sorted(got), (
        "a record of the killed task twice or out of order"
    )
    assert len(got) < 500, "the task was not killed"
    lost = {int(m[2]): int(m[1]) for m in LOST.finditer((logs / "hub.log").read_text())}
    assert got[-1] + 1 - len(got) <= lost.get(victim, 0), (got[-1] + 1 - len(got), lost)
    normal = Counter(
        (int(m[2]), int(m[3]))
        for m in map(TASK_LINE.match, (logs / "tasks.log").read_text().splitlines())
        if m
    )
    assert normal == Counter({(n, i): 1 for n in range(10) for i in range(20)})
