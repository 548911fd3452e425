"""Bad FORKLOG_* settings stop a real gunicorn in the master, before any worker is forked."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import time
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

from tests.docs_blocks import docs_block
from tests.integration.gunicorn_proc import REPO, Gunicorn


def bad_settings_example() -> Tuple[Dict[str, str], List[str]]:
    """The Configuration page's failing start: its variables, and the lines it shows gunicorn print."""
    command, *shown = docs_block("bad-settings").text.splitlines()
    words = shlex.split(command[2:])
    env = dict(word.split("=", 1) for word in words if "=" in word and word.startswith("FORKLOG_"))
    assert words[len(env) :] == ["gunicorn", "-c", "gunicorn_conf.py", "app:app"]
    return env, shown


def run_to_exit(server: Gunicorn, timeout: float) -> Tuple[int, str, float]:
    """Run gunicorn in its own process group until it exits: (status, stderr, seconds taken)."""
    started = time.monotonic()
    proc = subprocess.Popen(
        server.argv,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=server.env,
        cwd=server.tmp_path,
        start_new_session=True,
        text=True,
    )
    try:
        _out, err = proc.communicate(timeout=timeout)
        return proc.returncode, err, time.monotonic() - started
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # whatever it may have left; nothing, normally
        proc.wait(5)


@pytest.mark.parametrize("config", ["gunicorn_conf.py", "one line", "fleet"])
def test_the_bad_settings_example_stops_gunicorn_at_once(tmp_path: Path, config: str) -> None:
    """The documented bad variables make gunicorn exit 1 at start with every problem, no worker booted:
    with this repository's config, a config that is ``from forklog.gunicorn import *`` alone, and the
    Deployment page's, which makes sinks of its own."""
    env, shown = bad_settings_example()
    conf = REPO / config
    if config == "one line":
        conf = tmp_path / "one_line_conf.py"
        conf.write_text("from forklog.gunicorn import *  # noqa: F403\n")
    elif config == "fleet":  # the Deployment page's config, with sinks of its own
        conf = tmp_path / "fleet_conf.py"
        conf.write_text(docs_block("fleet-config").text)
    server = Gunicorn(tmp_path, env=env, conf=conf)
    status, err, took = run_to_exit(server, timeout=60)
    assert status == 1, err
    assert took < 30
    lines = err.splitlines()
    for expected in shown:
        if expected.endswith("..."):
            assert any(line.startswith(expected[:-3]) for line in lines), (expected, err)
        else:
            assert expected in lines, (expected, err)
    assert "Traceback" not in err
    assert "Booting worker" not in err and "Listening at" not in err
    assert not server.log_file.exists(), "a hub was built"


def test_an_unwritable_file_stops_gunicorn(tmp_path: Path) -> None:
    """FORKLOG_FILE under a regular file fails in the master with the variable, value and reason."""
    server = Gunicorn(tmp_path, env={"FORKLOG_FILE": "/etc/hostname/app.log", "FORKLOG_BACKUP_COUNT": "-2"})
    status, err, _took = run_to_exit(server, timeout=60)
    assert status == 1, err
    assert (
        "FORKLOG_FILE='/etc/hostname/app.log': expected a writable file path, or '-' for no file sink "
        "(/etc/hostname is not a directory)"
    ) in err.splitlines()
    assert "FORKLOG_BACKUP_COUNT='-2': expected an integer >= 0" in err.splitlines()
    assert "Booting worker" not in err
