"""The shell steps of the README, gunicorn and Deployment pages, run as written (tests/docs_blocks.py).

What a block cannot name in a test (a port in use, /tmp) is the one thing
replaced; everything else runs as the page prints it, from a shell.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterator, List

import pytest

from tests.docs_blocks import docs_block
from tests.integration.gunicorn_proc import REPO, Gunicorn, free_port, wait_for
from tests.integration.test_syslog import free_tcp_and_udp_port, unescape


def shell_server(tmp_path: Path, script: str, env: Dict[str, str], cwd: Path = REPO) -> Gunicorn:
    """A gunicorn the shell ``script`` starts in ``cwd`` (in its own process group), on a free port."""
    server = Gunicorn(tmp_path, env=env)
    server.port = free_port()
    server.env["BIND"] = f"127.0.0.1:{server.port}"
    # The blocks after the first assume the venv activated: this interpreter's.
    server.env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{server.env['PATH']}"
    server.argv = ["bash", "-c", f"cd {shlex.quote(str(cwd))} && {script}"]
    return server


def served(server: Gunicorn, paths: List[str]) -> None:
    try:
        server.start()
        for path in paths:
            assert server.get(path) == 200
        assert server.stop() == 0
    finally:
        server.kill_group()


def test_make_run_serves_the_demo(tmp_path: Path) -> None:
    """The README's first command serves the demo, and Ctrl-C stops it with every record written (the
    second command, `make test`, is the one CI runs)."""
    run, test = docs_block("readme-make").text.splitlines()
    assert run.split("#")[0].split() == ["make", "run"] and test.split("#")[0].split() == ["make", "test"]
    assert "make test" in (REPO / ".ci" / "run").read_text()
    server = shell_server(tmp_path, "exec make run BIND=$BIND", {"FORKLOG_FILE": str(tmp_path / "demo.log")})
    try:
        server.start()
        assert server.get("/") == 200
        os.killpg(server.pid, signal.SIGINT)  # Ctrl-C: make and gunicorn both get it
        server.wait_exit(30)
    finally:
        server.kill_group()
    assert "Shutting down: Master" in server.stderr()
    assert any(" hello from pid " in line for line in (tmp_path / "demo.log").read_text().splitlines())


@pytest.mark.parametrize("name", ["repo-config-run", "repo-config-json"])
def test_the_repositorys_config_commands(tmp_path: Path, name: str) -> None:
    """gunicorn page: this repository's config, as the page runs it (the venv: this interpreter's)."""
    script = docs_block(name).text.replace(
        ". .venv/bin/activate", f". {Path(sys.executable).parent}/activate"
    )
    script = script.replace("/tmp/x.log", str(tmp_path / "x.log"))
    env = {"FORKLOG_FILE": str(tmp_path / "x.log")} if name == "repo-config-run" else {}
    served(shell_server(tmp_path, script.strip().replace("\n", " && "), env), ["/", "/"])
    lines = (tmp_path / "x.log").read_text().splitlines()
    hellos = [line for line in lines if "hello from pid" in line]
    assert len(hellos) >= 2  # the readiness check's request and the test's
    if name == "repo-config-json":
        assert all(json.loads(line)["logger"] for line in lines)


def test_the_container_command_writes_json_on_stdout_and_no_file(tmp_path: Path) -> None:
    """Deployment, containers: no file, one JSON object per line on stdout (the app's records among them)."""
    words = shlex.split(docs_block("container-env").text)
    env = dict(word.split("=", 1) for word in words if re.match(r"^FORKLOG_\w+=", word))
    assert words[len(env) :] == ["gunicorn", "-c", "gunicorn_conf.py", "app:app"]
    server = Gunicorn(tmp_path, env=env)
    served(server, ["/"])
    objects = [json.loads(line) for line in server.stderr().splitlines() if line.startswith("{")]
    assert [o for o in objects if o["logger"] == "app" and o["message"].startswith("hello from pid")]
    assert not server.log_file.exists() and not (REPO / "logs" / "-").exists()


def test_the_logrotate_block_is_the_shipped_config() -> None:
    """Deployment: the block is deploy/logrotate/forklog (which tests/integration/test_logrotate.py runs)."""
    shipped = [
        line
        for line in (REPO / "deploy" / "logrotate" / "forklog").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert docs_block("logrotate-config").text.splitlines() == shipped


def same_sink(env: Dict[str, str], config: str) -> bool:
    """Whether the fleet variables and the fleet config's code make the same syslog sink.

    Each in a process of its own (the config calls ``configure()``): where
    it sends, facility, APP-NAME and level.
    """
    show = "print(s.destination, s.facility, s.app_name, s.level)"
    from_code = config + "\ns = dict(sinks())['syslog']\n" + show
    from_env = (
        "import forklog\ns = dict(forklog.Settings.from_env().handlers(create=False))['syslog']\n" + show
    )
    said = [
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, **extra},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for code, extra in ((from_code, {}), (from_env, env))
    ]
    assert said[0].startswith("relp://logs.internal:2514 16 shop 20"), said
    return said[0] == said[1]


@pytest.fixture
def rsyslog_from_the_steps(tmp_path: Path) -> Iterator[Dict[str, str]]:
    """Deployment, the receiver without systemd: the page's steps, run by bash; its ports free ones."""
    port, relp = free_tcp_and_udp_port(), free_tcp_and_udp_port()
    script = docs_block("rsyslog-steps").text
    script = script.replace("RSYSLOG_FORKLOG_PORT=5514", f"RSYSLOG_FORKLOG_PORT={port}")
    script = script.replace("RSYSLOG_FORKLOG_RELP_PORT=2514", f"RSYSLOG_FORKLOG_RELP_PORT={relp}")
    (tmp_path / "deploy").symlink_to(REPO / "deploy")  # "from forklog's source directory"
    result = subprocess.run(
        ["bash", "-e", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
    )
    pidfile = tmp_path / "rsyslog" / "rsyslogd.pid"
    try:
        assert result.returncode == 0, result.stdout + result.stderr
        wait_for(pidfile.exists, 20, "rsyslogd's pid file")
        yield {"relp": str(relp), "out": str(tmp_path / "rsyslog" / "fleet.log")}
    finally:
        if pidfile.exists():
            pid = int(pidfile.read_text())
            os.kill(pid, signal.SIGTERM)
            wait_for(lambda: not Path(f"/proc/{pid}").exists(), 20, "rsyslogd to exit")


def test_the_rsyslog_steps_and_the_senders_variables(
    tmp_path: Path, rsyslog_from_the_steps: Dict[str, str]
) -> None:
    """The page's receiver takes the page's sender variables: local0, APP-NAME shop, the app's records."""
    words = shlex.split(docs_block("fleet-env").text.replace("export ", ""))
    env = dict(word.split("=", 1) for word in words)
    assert env["FORKLOG_SYSLOG"] == "relp://logs.internal:2514"
    assert same_sink(env, docs_block("fleet-config").text), "the variables and the code differ"
    env["FORKLOG_SYSLOG"] = f"relp://127.0.0.1:{rsyslog_from_the_steps['relp']}"
    (tmp_path / "gunicorn").mkdir()
    served(Gunicorn(tmp_path / "gunicorn", env=env), ["/"] * 3)
    out = Path(rsyslog_from_the_steps["out"])

    def hellos() -> List[str]:
        text = out.read_text(errors="replace") if out.exists() else ""
        return [unescape(line) for line in text.splitlines() if " hello from pid " in line]

    wait_for(lambda: len(hellos()) >= 3, 20, "the app's records in rsyslog's file")
    # <134>: facility local0 (16) * 8 + INFO (6); APP-NAME shop; MSGID the logger, app.
    assert all(re.match(r"^<134>1 \S+ \S+ shop \d+ app ", line) for line in hellos()), hellos()
