"""``forklog run -- COMMAND`` (issue 24): every Python process below the command attaches to one hub.

A real ``python`` script with a ``multiprocessing`` pool and no initializer,
under each start method: every record once in the hub's file, in order per
process, made by the pool's processes; the command's status passed on; a
signal to ``forklog run`` passed on to the command; a process of another
user cannot attach.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Dict, List

import pytest

from tests.docs_blocks import docs_block
from tests.integration.gunicorn_proc import REPO
from tests.integration.test_run_servers import kill_tree
from tests.support import wait_for

SCRIPT = REPO / "tests" / "apps" / "run_pool_script.py"
#: A job's record in the hub's file (logs/app.log's format: "... [INFO] job PID THREAD - MESSAGE").
#: A record of docs/servers/pools.md's batch.py in the hub's file.
DOCS_JOB_LINE = re.compile(r" \[INFO\] job (\d+) \S+ - job (\d+) record (\d+)$")
JOB_LINE = re.compile(r" \[INFO\] job (\d+) \S+ - job (\d+) record (\d+) pid (\d+)$")
NOBODY = 65534


def run(tmp_path: Path, *command: str, env: Dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """``python -m forklog run -- COMMAND`` with the hub's file in ``tmp_path``, the console off."""
    environ = dict(os.environ, FORKLOG_FILE=str(tmp_path / "hub.log"), FORKLOG_CONSOLE="off", **(env or {}))
    with open(tmp_path / "stderr", "wb") as stderr:  # the child keeps its own descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "forklog", "run", "--", *command],
            cwd=tmp_path,
            env=environ,
            stderr=stderr,
            start_new_session=True,
        )


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_a_pool_without_an_initializer_logs_through_the_hub(tmp_path: Path, method: str) -> None:
    """docs/servers/pools.md's batch.py and command, under each start method: 8 jobs' 100 records once,
    in order per process, made by the pool's processes."""
    (tmp_path / "batch.py").write_text(docs_block("run-pool-script").text)
    command = shlex.split(docs_block("run-pool").text)
    assert command[:3] == ["forklog", "run", "--"] and command[-1] == "forkserver"
    command[3] = sys.executable  # "python": this interpreter
    proc = run(tmp_path, *command[3:-1], method)
    assert proc.wait(120) == 0, (tmp_path / "stderr").read_text()
    by_job: Dict[int, List[int]] = defaultdict(list)
    pids = set()
    for line in (tmp_path / "hub.log").read_text().splitlines():
        match = DOCS_JOB_LINE.search(line)
        if match:
            by_job[int(match[2])].append(int(match[3]))
            pids.add(int(match[1]))
    assert dict(by_job) == {n: list(range(100)) for n in range(8)}, "a record lost, doubled or reordered"
    assert 1 <= len(pids) <= 3 and proc.pid not in pids
    assert "forklog:" not in (tmp_path / "stderr").read_text()
    # Each job's traceback whole: its head, then the frame, then the exception, on the lines that follow.
    text = (tmp_path / "hub.log").read_text()
    for n in range(8):
        (after,) = re.findall(rf" - job {n} traceback\n((?:(?!\d{{4}}-\d\d-\d\d ).*\n)+)", text)
        assert after.startswith("Traceback (most recent call last):\n"), after
        assert after.rstrip().endswith(f"ValueError: job {n} failed"), after


def test_forklog_run_exits_with_the_commands_status(tmp_path: Path) -> None:
    proc = run(tmp_path, sys.executable, "-c", "import sys; sys.exit(3)")
    assert proc.wait(60) == 3


def test_a_signal_to_forklog_run_reaches_the_command(tmp_path: Path) -> None:
    """TERM to ``forklog run`` goes to the command, which logs it; run exits with its status."""
    waiter = tmp_path / "waiter.py"
    waiter.write_text(
        "import logging, signal, sys, time\n"
        "def stop(signum, frame):\n"
        "    logging.getLogger('waiter').warning('got signal %d', signum)\n"
        "    sys.exit(7)\n"
        "signal.signal(signal.SIGTERM, stop)\n"
        "logging.getLogger('waiter').warning('ready')\n"
        "while True:\n"
        "    time.sleep(0.05)\n"
    )
    proc = run(tmp_path, sys.executable, str(waiter))
    log = tmp_path / "hub.log"
    try:
        wait_for(lambda: log.exists() and " ready" in log.read_text(), 30, "the command's first record")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 7
    finally:
        if proc.poll() is None:
            kill_tree(proc.pid)
    assert f"got signal {int(signal.SIGTERM)}" in log.read_text()


def test_a_process_of_another_user_cannot_attach(tmp_path: Path) -> None:
    """As root, a process that turns into ``nobody`` and asks the address is refused within the bound:
    it logs as it would without forklog, said once, and nothing of it reaches the hub's file."""
    assert os.geteuid() == 0, "runs a process as nobody: run the tests as root"
    code = (  # -E: no PYTHONPATH, so forklog run's hook does not attach it as root first
        "import logging, os\n"
        "from forklog._worker.attach import attach\n"
        f"os.setgroups([]); os.setgid({NOBODY}); os.setuid({NOBODY})\n"
        "print('attached' if attach() is not None else 'refused', flush=True)\n"
        "logging.getLogger('probe').warning('from nobody')\n"
    )
    started = time.monotonic()
    proc = run(tmp_path, sys.executable, "-E", "-c", code)
    assert proc.wait(60) == 0, (tmp_path / "stderr").read_text()
    assert time.monotonic() - started < 30
    stderr = (tmp_path / "stderr").read_text()
    assert "could not attach to the hub" in stderr and "from nobody" in stderr, stderr
    assert "from nobody" not in (tmp_path / "hub.log").read_text()


def test_a_logging_config_naming_forklog_handler_sends_to_the_hub(tmp_path: Path) -> None:
    """Without the wrapper's hook (``python -E``): a ``dictConfig`` naming ``forklog.Handler`` attaches the
    process to the hub ``FORKLOG_HUB`` names; each record once, from that process."""
    code = (
        "import logging.config, os\n"
        "logging.config.dictConfig({'version': 1, 'handlers': {'hub': {'class': 'forklog.Handler'}},\n"
        "    'root': {'level': 'INFO', 'handlers': ['hub']}})\n"
        "for i in range(50):\n"
        "    logging.getLogger('configured').info('record %d pid %d', i, os.getpid())\n"
    )
    proc = run(tmp_path, sys.executable, "-E", "-c", code)
    assert proc.wait(60) == 0, (tmp_path / "stderr").read_text()
    lines = [line for line in (tmp_path / "hub.log").read_text().splitlines() if " - record " in line]
    assert [int(line.split(" - record ")[1].split()[0]) for line in lines] == list(range(50))


def test_start_hub_in_a_parent_with_its_own_hook(tmp_path: Path) -> None:
    """``forklog.run.start_hub()`` (Celery's ``worker_init``, say): the parent's own hub; a spawned pool
    started afterwards attaches to it with no initializer; every record once."""
    code = (
        "import logging, multiprocessing, os, sys\n"
        f"sys.path.insert(0, {str(SCRIPT.parent)!r})\n"
        "from run_pool_script import job\n"
        "from forklog.run import start_hub\n"
        "if __name__ == '__main__':\n"
        "    start_hub()\n"
        "    with multiprocessing.get_context('spawn').Pool(2) as pool:\n"
        "        pool.starmap(job, [(n, 100) for n in range(4)])\n"
    )
    script = tmp_path / "parent.py"
    script.write_text(code)
    env = dict(os.environ, FORKLOG_FILE=str(tmp_path / "hub.log"), FORKLOG_CONSOLE="off")
    done = subprocess.run(
        [sys.executable, str(script)], check=False, cwd=tmp_path, env=env, capture_output=True, timeout=120
    )
    assert done.returncode == 0, done.stderr.decode()
    by_job: Dict[int, List[int]] = defaultdict(list)
    for line in (tmp_path / "hub.log").read_text().splitlines():
        match = JOB_LINE.search(line)
        if match:
            by_job[int(match[2])].append(int(match[3]))
    assert dict(by_job) == {n: list(range(100)) for n in range(4)}


def test_a_member_of_the_hubs_group_attaches_as_another_user(tmp_path: Path) -> None:
    """``FORKLOG_HUB_GROUP``: a ``nobody`` process of that group attaches (its records reach the hub), and
    the hub opens no file it names, even one it forges: refused, said on stderr."""
    assert os.geteuid() == 0, "runs a process as nobody: run the tests as root"
    evil = tmp_path / "evil.log"
    code = (
        "import logging, os\n"
        "from forklog._worker import adoption\n"
        "from forklog._worker.attach import attach\n"
        "from forklog._wire.adopted_lines import TargetSpec\n"
        f"os.setgroups([]); os.setgid({NOBODY}); os.setuid({NOBODY})\n"
        "assert attach() is not None\n"
        "logging.getLogger('probe').warning('from nobody in the group')\n"
        "record = logging.makeLogRecord({'msg': 'forged', 'levelno': 30, 'levelname': 'WARNING'})\n"
        f"adoption.attached().send_text(TargetSpec('file', {str(evil)!r}).to_bytes(), record, 'forged')\n"
    )
    proc = run(tmp_path, sys.executable, "-E", "-c", code, env={"FORKLOG_HUB_GROUP": "nogroup"})
    assert proc.wait(60) == 0, (tmp_path / "stderr").read_text()
    assert "from nobody in the group" in (tmp_path / "hub.log").read_text()
    assert not evil.exists(), "the hub opened a file a process of another user named"
    stderr = (tmp_path / "stderr").read_text()
    assert (
        f"target {evil} asked for by pid" in stderr and "of another user than the master, refused" in stderr
    )


def test_a_worker_that_drops_to_another_user_after_registering_opens_no_file(tmp_path: Path) -> None:
    """Root forklog run; a child forked as root (registered as root) turns nobody, as gunicorn's and
    Celery's workers do, then names a file while it lives: the hub judges its user now, and refuses."""
    assert os.geteuid() == 0, "runs a process as nobody: run the tests as root"
    evil = tmp_path / "evil.log"
    code = (
        "import logging, os\n"
        "from forklog._worker import adoption\n"
        "from forklog._wire.adopted_lines import TargetSpec\n"
        "import signal, time\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        f"    os.setgroups([]); os.setgid({NOBODY}); os.setuid({NOBODY})\n"
        "    record = logging.makeLogRecord({'msg': 'forged', 'levelno': 30, 'levelname': 'WARNING'})\n"
        f"    adoption.attached().send_text(TargetSpec('file', {str(evil)!r}).to_bytes(), record, 'forged')\n"
        "    logging.getLogger('probe').warning('nobody now')\n"
        "    signal.pause()  # a worker lives on: the hub reads it as it is now\n"
        "deadline = time.monotonic() + 30\n"
        f"log = {str(tmp_path / 'hub.log')!r}\n"
        "while 'nobody now' not in open(log).read() and time.monotonic() < deadline:\n"
        "    time.sleep(0.02)  # the hub has handled what the child sent: its record after the forgery\n"
        "os.kill(pid, signal.SIGKILL)\n"
        "os.waitpid(pid, 0)\n"
    )
    os.chmod(tmp_path, 0o777)
    proc = run(tmp_path, sys.executable, "-c", code)
    assert proc.wait(60) == 0, (tmp_path / "stderr").read_text()
    assert "nobody now" in (tmp_path / "hub.log").read_text()
    assert not evil.exists(), "the root hub opened a file a process of another user named"
    assert "of another user than the master, refused" in (tmp_path / "stderr").read_text()


def test_signals_after_the_command_exits_go_to_what_it_left_not_to_its_group(tmp_path: Path) -> None:
    """The command starts a process (a USR2 upgrade's new master) and exits; that process, re-parented to
    forklog run, gets the HUP; its own child (a worker, HUP at its default) is not signalled."""
    code = (
        "import os, signal, sys, time\n"
        "if os.fork():\n"
        "    sys.exit(0)  # the command: gone at once\n"
        "worker = os.fork()\n"
        "if worker == 0:\n"
        "    while True:\n"
        "        time.sleep(0.05)  # HUP at its default: it would die of one\n"
        "def hup(signum, frame):\n"
        "    open('hup', 'w').write(str(worker))\n"
        "def term(signum, frame):\n"
        "    os.kill(worker, signal.SIGKILL); os.waitpid(worker, 0); os._exit(0)\n"
        "signal.signal(signal.SIGHUP, hup)\n"
        "signal.signal(signal.SIGTERM, term)\n"
        "open('ready', 'w').write(f'{os.getpid()} {worker}')\n"
        "while True:\n"
        "    time.sleep(0.05)\n"
    )
    proc = run(tmp_path, sys.executable, "-c", code)
    try:
        wait_for(lambda: bool((tmp_path / "ready").exists() and (tmp_path / "ready").read_text()), 30, "it")
        adopted, worker = map(int, (tmp_path / "ready").read_text().split())

        def parent_of(pid: int) -> int:
            return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])

        wait_for(lambda: parent_of(adopted) == proc.pid, 30, "the process re-parented to forklog run")
        proc.send_signal(signal.SIGHUP)
        wait_for((tmp_path / "hup").exists, 30, "the HUP at the re-parented process")
        os.kill(worker, 0)  # still alive: the HUP went to the process forklog run adopted, not its group
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            kill_tree(proc.pid)


def test_a_socket_another_user_made_at_the_address_is_not_trusted(tmp_path: Path) -> None:
    """FORKLOG_HUB names a path another user could make a socket at (a stale address): what answers there
    must be a hub of this user, root, or FORKLOG_HUB_UID's; else nothing is taken from it."""
    assert os.geteuid() == 0, "runs a process as nobody: run the tests as root"
    shared = Path(tempfile.mkdtemp(prefix="forklog-squat-"))  # under /tmp: nobody reaches it
    shared.chmod(0o777)
    address = shared / "squat.sock"
    code = (
        "import os, socket\n"
        f"os.setgroups([]); os.setgid({NOBODY}); os.setuid({NOBODY})\n"
        "sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
        f"sock.bind({str(address)!r}); os.chmod({str(address)!r}, 0o777); sock.listen(1)\n"
        "open(" + repr(str(shared / "listening")) + ", 'w').close()\n"
        "conn, _ = sock.accept()\n"
        "socket.send_fds(conn, [b'not a policy'], [0, 1])\n"
        "conn.close()\n"
    )
    squatter = subprocess.Popen([sys.executable, "-E", "-c", code], start_new_session=True)
    try:
        wait_for((shared / "listening").exists, 30, "the squatter's socket")
        env = {k: v for k, v in os.environ.items() if not k.startswith("FORKLOG_HUB")}
        probe = (
            "from forklog._worker.attach import _connect\n"
            f"print('taken' if _connect({str(address)!r}, 1.0) else 'refused')\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", probe], check=False, env=env, capture_output=True, text=True, timeout=30
        )
        assert done.stdout.strip() == "refused", done.stdout + done.stderr
    finally:
        squatter.kill()
        squatter.wait(10)
        shutil.rmtree(shared, ignore_errors=True)


def test_forklog_run_below_forklog_run_adds_no_second_hub(tmp_path: Path) -> None:
    """Nested: the inner forklog run finds the hub above answering and runs the command as it is; the
    inner command's records reach the outer hub's file, and no second hub writes it."""
    # The inner run is given a file of its own: a second hub would write the record there.
    inner = ["env", f"FORKLOG_FILE={tmp_path / 'inner.log'}", sys.executable, "-m", "forklog", "run", "--"]
    code = "import logging, os; logging.getLogger('inner').warning('inner pid %d', os.getpid())"
    proc = run(tmp_path, *inner, sys.executable, "-c", code)
    assert proc.wait(60) == 0, (tmp_path / "stderr").read_text()
    lines = [line for line in (tmp_path / "hub.log").read_text().splitlines() if " - inner pid " in line]
    assert len(lines) == 1, lines
    assert not (tmp_path / "inner.log").exists(), "the inner run built a hub of its own"
    assert run(tmp_path, "--help").wait(30) == 0
