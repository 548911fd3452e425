"""deploy/: each shipped file passes its own tool's check; the demo unit's command runs as systemd would."""

from __future__ import annotations

import array
import http.client
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import psutil
import pytest
from gunicorn.config import Config

import forklog
from tests.integration.gunicorn_proc import CONTROL_SOCKET_OFF, REPO, free_port, wait_for
from tests.integration.test_run_servers import kill_tree

DEPLOY = REPO / "deploy"
DEMO_UNIT = DEPLOY / "systemd" / "forklog-demo.service"


def tool(name: str, package: str) -> str:
    path = shutil.which(name) or f"/usr/sbin/{name}"
    if not os.access(path, os.X_OK):
        pytest.fail(
            f"{name} not found: install {package} (apt-get install -y --no-install-recommends {package})"
        )
    return path


def service_section(unit: Path) -> Dict[str, List[str]]:
    """The [Service] settings of ``unit``: key -> every value given (Environment= repeats)."""
    settings: Dict[str, List[str]] = {}
    section = ""
    for raw in unit.read_text().splitlines():
        line = raw.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and line and not line.startswith("#"):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


@pytest.mark.parametrize("unit", sorted((DEPLOY / "systemd").glob("*.service")), ids=lambda p: p.name)
def test_systemd_units_verify_as_shipped(unit: Path) -> None:
    """`systemd-analyze verify` accepts each shipped unit: exit 0, nothing on stderr (warnings go there)."""
    result = subprocess.run(
        [tool("systemd-analyze", "systemd"), "verify", str(unit)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (result.returncode, result.stderr) == (0, "")


def test_demo_unit_stops_after_the_graceful_timeout_and_the_drain() -> None:
    """TERM to the master only, HUP to reload, no daemon, a stop timeout above gunicorn's and forklog's."""
    service = service_section(DEMO_UNIT)
    assert service["Type"] == ["notify"] and service["KillMode"] == ["mixed"]
    assert service["ExecReload"] == ["/bin/kill -s HUP $MAINPID"]
    argv = shlex.split(service["ExecStart"][0])
    assert not {"-D", "--daemon"} & set(argv)
    graceful = Config().graceful_timeout  # the unit does not change it
    assert int(service["TimeoutStopSec"][0]) > graceful + forklog.Settings().stop_timeout
    pidfile = argv[argv.index("--pid") + 1]
    assert f'kill -USR1 "$(cat {pidfile})"' in (DEPLOY / "logrotate" / "forklog").read_text()


@pytest.fixture
def notify_socket() -> Iterator[socket.socket]:
    """A NOTIFY_SOCKET like systemd's, with the sender's credentials attached to each datagram."""
    folder = tempfile.mkdtemp(prefix="fl-notify-")  # short: a socket path has 108 bytes at most
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    sock.bind(f"{folder}/notify")
    try:
        yield sock
    finally:
        sock.close()
        shutil.rmtree(folder, ignore_errors=True)


def receive_notification(sock: socket.socket, timeout: float) -> tuple[str, int]:
    """The next sd_notify() message and the pid that sent it (SCM_CREDENTIALS, as systemd checks)."""
    sock.settimeout(timeout)
    data, ancillary, _flags, _addr = sock.recvmsg(4096, socket.CMSG_SPACE(struct.calcsize("3i")))
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
            pid = array.array("i", payload[: struct.calcsize("3i")])[0]
            return data.decode(), pid
    raise AssertionError("no credentials on the notification")


def get(port: int, path: str) -> int:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request("GET", path)
            return conn.getresponse().status
        finally:
            conn.close()
    except OSError:
        return 0


def test_demo_unit_command_notifies_ready_reloads_and_stops(
    tmp_path: Path, notify_socket: socket.socket
) -> None:
    """The unit's ExecStart, run like systemd would: READY=1 from the main pid; HUP reloads; TERM exits 0."""
    service = service_section(DEMO_UNIT)
    # The unit's paths, pointed at this checkout and this test's directory.
    where = {
        "/srv/forklog-demo/.venv/bin": str(Path(sys.executable).parent),
        "/srv/forklog-demo/logs": str(tmp_path),
        "/srv/forklog-demo": str(REPO),
        "/run/forklog-demo": str(tmp_path),
    }

    def local(text: str) -> str:
        return re.sub("|".join(map(re.escape, where)), lambda m: where[m.group(0)], text)

    port = free_port()
    env = {"PATH": os.environ["PATH"], "GUNICORN_CMD_ARGS": " ".join(CONTROL_SOCKET_OFF)}
    for assignment in service["Environment"]:
        key, _, value = local(assignment).partition("=")
        env[key] = value
    env.update(BIND=f"127.0.0.1:{port}", NOTIFY_SOCKET=notify_socket.getsockname())
    argv = shlex.split(local(service["ExecStart"][0]))
    log_file = Path(env["FORKLOG_FILE"])
    stop_timeout = int(service["TimeoutStopSec"][0])
    proc: Optional[subprocess.Popen[bytes]] = None
    try:
        with open(tmp_path / "stderr", "wb") as err:
            proc = subprocess.Popen(
                argv, cwd=local(service["WorkingDirectory"][0]), env=env, stderr=err, start_new_session=True
            )
        state, sender = receive_notification(notify_socket, 30)
        # NotifyAccess=main: systemd takes READY=1 only from the pid it started (env exec()s gunicorn).
        assert state.startswith("READY=1") and sender == proc.pid
        wait_for(lambda: get(port, "/health") == 200, 30, "the demo to answer")
        assert Path(argv[argv.index("--pid") + 1]).read_text().strip() == str(proc.pid)
        reload = local(service["ExecReload"][0]).replace("$MAINPID", str(proc.pid))
        subprocess.run(shlex.split(reload), check=True, timeout=10)
        wait_for(lambda: "Handling signal: hup" in log_file.read_text(), 30, "the HUP in the log")
        wait_for(lambda: get(port, "/health") == 200, 30, "the demo to answer after HUP")
        os.kill(proc.pid, signal.SIGTERM)  # KillMode=mixed: TERM to the main process only
        assert proc.wait(stop_timeout) == 0, (tmp_path / "stderr").read_text()
        assert "Shutting down: Master" in log_file.read_text()
    finally:
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


ROOT_UNIT = DEPLOY / "systemd" / "forklog-root.service"

#: This test's interpreter may live where www-data cannot read it (under /root): the master
#: (root) loads the app (--preload) and what a worker imports lazily at its start.
ROOT_CONF = """\
import hashlib
import random

random.seed()
exec(compile(open({conf!r}).read(), {conf!r}, "exec"))
"""


def test_root_unit_command_keeps_the_logs_root_s_and_the_workers_www_data(tmp_path: Path) -> None:
    """The root-master unit's ExecStart: workers run as www-data, the master writes the logs in a root-only
    directory; HUP reloads, TERM exits 0."""
    assert os.geteuid() == 0, "the root unit's command starts workers as www-data: run the tests as root"
    service = service_section(ROOT_UNIT)
    assert service["User"] == ["root"] and service["LogsDirectoryMode"] == ["0750"]
    logs = tmp_path / "logs"
    logs.mkdir(mode=0o750)  # what systemd makes of LogsDirectory= for User=root
    tmp_path.chmod(0o755)
    where = {
        "/srv/forklog-demo/.venv/bin": str(Path(sys.executable).parent),
        "/srv/forklog-demo": str(REPO),
        f"/var/log/{service['LogsDirectory'][0]}": str(logs),
        "/run/forklog-root": str(tmp_path),
    }

    def local(text: str) -> str:
        return re.sub("|".join(map(re.escape, where)), lambda m: where[m.group(0)], text)

    port = free_port()
    env = {"PATH": os.environ["PATH"], "GUNICORN_CMD_ARGS": " ".join([*CONTROL_SOCKET_OFF, "--preload"])}
    for assignment in service["Environment"]:
        key, _, value = local(assignment).partition("=")
        env[key] = value
    env["BIND"] = f"127.0.0.1:{port}"  # not the unit's port 80: loopback only
    argv = shlex.split(local(service["ExecStart"][0]))
    conf = tmp_path / "root_conf.py"
    conf.write_text(ROOT_CONF.format(conf=str(REPO / argv[argv.index("-c") + 1])))
    argv[argv.index("-c") + 1] = str(conf)
    log_file = Path(env["FORKLOG_FILE"])
    proc: Optional[subprocess.Popen[bytes]] = None
    try:
        with open(tmp_path / "stderr", "wb") as err:
            proc = subprocess.Popen(
                argv, cwd=local(service["WorkingDirectory"][0]), env=env, stderr=err, start_new_session=True
            )
        wait_for(lambda: get(port, "/health") == 200, 30, "the demo to answer")
        www_data = pwd.getpwnam("www-data").pw_uid

        def workers_switched() -> bool:  # one worker may answer while another still boots as root
            workers = psutil.Process(proc.pid).children()
            return bool(workers) and {w.uids().effective for w in workers} == {www_data}

        wait_for(workers_switched, 30, "every worker to run as www-data")
        subprocess.run(["/bin/kill", "-s", "HUP", str(proc.pid)], check=True, timeout=10)
        wait_for(lambda: "Handling signal: hup" in log_file.read_text(), 30, "the HUP in the log")
        wait_for(lambda: get(port, "/health") == 200, 30, "the demo to answer after HUP")
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(int(service["TimeoutStopSec"][0])) == 0, (tmp_path / "stderr").read_text()
    finally:
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    text = log_file.read_text()
    assert "Booting worker with pid" in text and "Shutting down: Master" in text
    # The master wrote it (root's, 0640), in a directory no worker can change.
    assert (log_file.stat().st_uid, oct(log_file.stat().st_mode & 0o777)) == (0, "0o640")
    assert (logs.stat().st_uid, oct(logs.stat().st_mode & 0o777)) == (0, "0o750")
    assert sorted(p.name for p in logs.iterdir()) == ["app.log"]


def test_shipped_logrotate_config_passes_logrotate_debug(tmp_path: Path) -> None:
    """`logrotate -d` (debug: reads and plans, changes nothing) accepts deploy/logrotate/forklog as is."""
    result = subprocess.run(
        [
            tool("logrotate", "logrotate"),
            "-d",
            "-s",
            str(tmp_path / "state"),
            str(DEPLOY / "logrotate" / "forklog"),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "rotating pattern: /srv/forklog-demo/logs/*.log" in output
    assert "error" not in output.lower(), output


def test_shipped_rsyslog_config_validates_and_names_a_missing_setting(tmp_path: Path) -> None:
    """`rsyslogd -N1` accepts deploy/rsyslog/forklog.conf with its variables set; fails without the file."""
    rsyslogd = tool("rsyslogd", "rsyslog")
    conf = str(DEPLOY / "rsyslog" / "forklog.conf")
    env = dict(
        os.environ,
        RSYSLOG_FORKLOG_ADDRESS="127.0.0.1",
        RSYSLOG_FORKLOG_PORT=str(free_port()),
        RSYSLOG_FORKLOG_RELP_PORT=str(free_port()),
        RSYSLOG_FORKLOG_WORKDIR=str(tmp_path),
        RSYSLOG_FORKLOG_FILE=str(tmp_path / "fleet.log"),
    )
    ok = subprocess.run([rsyslogd, "-N1", "-f", conf], check=False, capture_output=True, text=True, env=env)
    assert ok.returncode == 0 and "End of config validation run" in ok.stderr, ok.stderr
    assert "error" not in ok.stderr.lower() and "warning" not in ok.stderr.lower(), ok.stderr
    del env["RSYSLOG_FORKLOG_FILE"]
    bad = subprocess.run([rsyslogd, "-N1", "-f", conf], check=False, capture_output=True, text=True, env=env)
    assert bad.returncode != 0 and '"file" or "dynafile" parameter must be given' in bad.stderr


RUN_UNIT = DEPLOY / "systemd" / "forklog-run.service"


def test_run_unit_command_notifies_from_below_forklog_run_reloads_and_stops(
    tmp_path: Path, notify_socket: socket.socket
) -> None:
    """Issue 24: gunicorn below forklog run, as the unit starts it: READY=1 comes from gunicorn's master, a
    child of the main pid (so the unit says NotifyAccess=all); HUP to forklog run reaches gunicorn; TERM
    to forklog run alone stops everything, exit 0."""
    service = service_section(RUN_UNIT)
    assert service["NotifyAccess"] == ["all"] and service["KillMode"] == ["mixed"]
    where = {
        "/srv/forklog-demo/.venv/bin": str(Path(sys.executable).parent),
        "/srv/forklog-demo/logs": str(tmp_path),
        "/srv/forklog-demo": str(REPO),
    }

    def local(text: str) -> str:
        return re.sub("|".join(map(re.escape, where)), lambda m: where[m.group(0)], text)

    port = free_port()
    env = {"PATH": os.environ["PATH"], "GUNICORN_CMD_ARGS": " ".join(CONTROL_SOCKET_OFF)}
    for assignment in service["Environment"]:
        key, _, value = local(assignment).partition("=")
        env[key] = value
    env.update(BIND=f"127.0.0.1:{port}", NOTIFY_SOCKET=notify_socket.getsockname())
    proc: Optional[subprocess.Popen[bytes]] = None
    try:
        with open(tmp_path / "stderr", "wb") as err:
            proc = subprocess.Popen(
                shlex.split(local(service["ExecStart"][0])),
                cwd=local(service["WorkingDirectory"][0]),
                env=env,
                stderr=err,
                start_new_session=True,
            )
        state, sender = receive_notification(notify_socket, 30)
        assert state.startswith("READY=1") and sender != proc.pid, "READY=1 from below forklog run"
        wait_for(lambda: get(port, "/health") == 200, 30, "the demo to answer")
        reload = local(service["ExecReload"][0]).replace("$MAINPID", str(proc.pid))
        subprocess.run(shlex.split(reload), check=True, timeout=10)
        # gunicorn's own lines go where plain gunicorn sends them (stderr), written by the hub above.
        said = tmp_path / "stderr"
        wait_for(lambda: "Handling signal: hup" in said.read_text(), 30, "the HUP on stderr")
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(int(service["TimeoutStopSec"][0])) == 0, (tmp_path / "stderr").read_text()
        assert "Shutting down: Master" in said.read_text()
    finally:
        if proc is not None and proc.poll() is None:
            kill_tree(proc.pid)  # gunicorn has a process group of its own below forklog run
            proc.wait(10)
