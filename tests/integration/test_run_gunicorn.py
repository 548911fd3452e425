"""gunicorn with forklog's hooks, below ``forklog run`` (issue 24): one hub, the one above.

The master is attached to forklog run's hub as it starts, so forklog's
hooks build no hub of their own: gunicorn's own handlers (its stderr, its
``errorlog`` file) stay as plain gunicorn makes them, adopted, and every
file is written by forklog run alone. A USR2 upgrade forks a new master from
the old one; after QUIT of the old one, forklog run (a child subreaper)
stays until the new one exits. USR1 to gunicorn's master (logrotate's way)
has the hub above reopen the files. Every request's record once.
"""

from __future__ import annotations

import http.client
import os
import re
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

from tests.integration.gunicorn_proc import REPO, free_port
from tests.integration.test_run_servers import children, descendants, holders, kill_tree
from tests.support import wait_for

CONF = "from forklog.gunicorn import *  # noqa: F403\nworkers = 2\nerrorlog = {errorlog!r}\n"
HELLO = re.compile(r" - hello from pid (\d+)$")


def get(port: int, path: str, headers: dict[str, str] | None = None) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        response.read()
        return response.status
    except (OSError, http.client.HTTPException):
        return 0
    finally:
        conn.close()


def test_gunicorn_below_forklog_run_uses_its_hub_through_a_usr2_upgrade(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    errorlog = logs / "gunicorn.err"
    (tmp_path / "conf.py").write_text(CONF.format(errorlog=str(errorlog)))
    port = free_port()
    env = dict(os.environ, FORKLOG_FILE=str(logs / "hub.log"), FORKLOG_CONSOLE="off")
    command = [
        *(sys.executable, "-m", "forklog", "run", "--"),
        *(sys.executable, "-m", "gunicorn", "-c", str(tmp_path / "conf.py"), "--chdir", str(REPO)),
        *("-b", f"127.0.0.1:{port}", "--no-control-socket", "app:app"),
    ]
    with open(tmp_path / "stderr", "wb") as stderr:
        proc = subprocess.Popen(command, cwd=tmp_path, env=env, stderr=stderr, start_new_session=True)
    sent = 0
    try:
        wait_for(lambda: get(port, "/health") == 200, 60, "gunicorn to serve")
        (old,) = children(proc.pid)
        for _ in range(20):
            assert get(port, "/") == 200
            sent += 1
        below = descendants(proc.pid)
        assert holders(below, logs) == set(), "a process below forklog run holds a log file"
        # logrotate's way: move the file, USR1 to gunicorn's master; it asks the hub above to reopen.
        errorlog.rename(logs / "gunicorn.err.1")
        os.kill(old, signal.SIGUSR1)
        wait_for(errorlog.exists, 30, "the errorlog reopened by the hub")
        os.kill(old, signal.SIGUSR2)  # a new master, forked from the old one
        wait_for(lambda: len([p for p in descendants(proc.pid) if p not in below]) >= 3, 60, "the new master")
        os.kill(old, signal.SIGQUIT)
        wait_for(lambda: old not in descendants(proc.pid), 60, "the old master to exit")
        assert proc.poll() is None, "forklog run left with the old master"
        for _ in range(20):
            assert get(port, "/") == 200
            sent += 1
        (new,) = children(proc.pid)  # the new master, re-parented to forklog run
        os.kill(new, signal.SIGTERM)
        assert proc.wait(60) == 0, (tmp_path / "stderr").read_text()[-3000:]
    finally:
        if proc.poll() is None:
            kill_tree(proc.pid)
            proc.wait(10)
    hub_lines = (logs / "hub.log").read_text().splitlines()
    hellos = Counter(m[1] for m in map(HELLO.search, hub_lines) if m)
    assert sum(hellos.values()) == sent, "each request's record once"
    rotated = (logs / "gunicorn.err.1").read_text()
    assert "Booting worker with pid" in rotated, "gunicorn's errorlog, written through the hub"
    assert "Handling signal: usr2" not in rotated, "a line after the USR1 went to the moved file"
    assert "Handling signal: usr2" in errorlog.read_text(), "the lines after USR1 go to the new file"
    assert "two hubs" not in (tmp_path / "stderr").read_text()
