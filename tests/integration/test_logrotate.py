"""logrotate (the real binary) with the shipped config, during load: nothing lost, nothing misplaced.

The file sink notices a moved file by itself within ``RotatingFileSink.CHECK_INTERVAL``
(a second): the gunicorn configs here set it to a day, so the records after the
rotation reach the new file only because logrotate's USR1 made the master reopen it.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from pathlib import Path
from typing import List

from tests.integration.gunicorn_proc import REPO, Accounting, BackgroundLoad, Gunicorn, run_load, wait_for
from tests.integration.test_gunicorn import BIG, N, burst_paths, ids

LOGROTATE = shutil.which("logrotate") or "/usr/sbin/logrotate"

#: The message of the assertion that fails when USR1 did not reopen the files.
MISPLACED = "a record written after USR1 went to the rotated file"

#: The moved-file check out of the way; put first in each gunicorn config of this module.
NO_MOVED_FILE_CHECK = """
from forklog import RotatingFileSink

# The sink's own moved-file check (once a second) would reopen the file without USR1.
RotatingFileSink.CHECK_INTERVAL = 86_400.0
"""

#: The repository's gunicorn_conf.py, its sinks from the FORKLOG_* variables, after the above.
SINKS_CONF = (
    NO_MOVED_FILE_CHECK
    + """
import forklog.gunicorn
from forklog import Settings
from forklog.gunicorn import *  # noqa: F403

settings = Settings.from_env()
forklog.gunicorn.configure(handlers=settings.handlers, **settings.hub_options())
accesslog = "-"
"""
)

#: The application's own TimedRotatingFileHandler ("D": it does not roll during the test), adopted.
ADOPTED_CONF = (
    NO_MOVED_FILE_CHECK
    + """
from forklog.gunicorn import *  # noqa: F403

workers = 2
logconfig_dict = {{
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {{"plain": {{"format": "%(process)d %(name)s %(message)s"}}}},
    "handlers": {{
        "timed": {{
            "class": "logging.handlers.TimedRotatingFileHandler",
            "filename": {path!r},
            "when": "D",
            "backupCount": 3,
            "formatter": "plain",
        }},
    }},
    "root": {{"level": "INFO", "handlers": []}},
    "loggers": {{"app": {{"level": "INFO", "handlers": ["timed"], "propagate": False}}}},
}}
"""
)


def shipped_config(log_dir: Path, pidfile: Path) -> str:
    """deploy/logrotate/forklog as shipped, with this test's two paths (logrotate -f rotates it now)."""
    text = (REPO / "deploy" / "logrotate" / "forklog").read_text()
    return text.replace("/srv/forklog-demo/logs", str(log_dir)).replace(
        "/run/forklog-demo/gunicorn.pid", str(pidfile)
    )


def logrotate(tmp_path: Path, log_dir: Path, pidfile: Path) -> None:
    """Run the real logrotate once, forced, with the shipped config: rename, create, USR1."""
    conf = tmp_path / "logrotate.conf"
    conf.write_text(shipped_config(log_dir, pidfile))
    conf.chmod(0o644)
    rotate = subprocess.run(
        [LOGROTATE, "-v", "-f", "-s", str(tmp_path / "state"), str(conf)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert rotate.returncode == 0, rotate.stderr


def text_of(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""


def wait_reopened(server: Gunicorn, path: str, rotated: Path, current: Path, line: str) -> None:
    """Until a fresh request's ``line`` is in ``current``: the master reopened it (USR1 handled).

    Requests from before the master handled USR1 land in ``rotated``, and
    that is right; once gunicorn has said "Handling signal: usr1", a few
    seconds of them there and none in ``current`` means USR1 reopened nothing.
    """
    wait_for(
        lambda: "Handling signal: usr1" in server.stderr() + text_of(rotated) + text_of(current),
        30,
        "gunicorn to handle logrotate's USR1",
    )
    deadline = time.monotonic() + 10
    attempt = 0
    while True:
        attempt += 1
        assert server.get(path.format(attempt)) == 200
        needle = line.format(attempt)

        def written(needle: str = needle) -> bool:
            return needle in text_of(current) or needle in text_of(rotated)

        with contextlib.suppress(AssertionError):  # a record may be dropped: another request then
            wait_for(written, 1.0, needle)
        if needle in text_of(current):
            return
        assert time.monotonic() < deadline, (
            f"{MISPLACED}: 10s after gunicorn handled USR1 the master still writes {rotated.name}, "
            f"{current.name} has none of {attempt} fresh requests' records"
        )


def test_logrotate_create_and_usr1_under_load(tmp_path: Path) -> None:
    """Rotation mid-load: every record once across both files; after USR1 only the new file grows."""
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    pidfile = tmp_path / "gunicorn.pid"
    conf = tmp_path / "gunicorn_conf.py"
    conf.write_text(SINKS_CONF)
    rotated, current = log_dir / "app.log.1", log_dir / "app.log"
    server = Gunicorn(
        tmp_path, ["-w", "3", "--pid", str(pidfile)], env={"FORKLOG_FILE": str(current)}, conf=conf
    )
    server.log_file = current
    try:
        server.start()
        load = BackgroundLoad(server, burst_paths("r", 300), concurrency=4)
        wait_for(
            lambda: current.exists() and current.stat().st_size > 300_000,
            60,
            "app.log to pass 300 kB under load",
        )
        logrotate(tmp_path, log_dir, pidfile)
        results = load.join(120)
        wait_reopened(server, "/health?after-usr1-{}", rotated, current, "GET /health?after-usr1-{} ")
        after = ids(run_load(server, burst_paths("after", 50), concurrency=2))
        assert server.stop() == 0
    finally:
        server.kill_group()

    # delaycompress: the first rotation leaves app.log.1 as it is (compress takes it next time).
    assert rotated.exists() and current.exists() and not list(log_dir.glob("*.gz"))
    assert oct(current.stat().st_mode & 0o777) == "0o640"
    for path in (rotated, current):
        assert b"\0" not in path.read_bytes(), f"NUL bytes in {path.name}"
    old = rotated.read_text()
    misplaced = [rid for rid in after if f"id={rid} " in old]
    assert not misplaced, f"{MISPLACED}: requests {misplaced[:5]}"
    lines: List[str] = old.splitlines() + current.read_text().splitlines()
    Accounting(lines).check({**ids(results), **after}, N, BIG)
    assert "Handling signal: usr1" in current.read_text() or "Handling signal: usr1" in old


def test_logrotate_and_usr1_reopen_an_adopted_timed_rotating_handler(tmp_path: Path) -> None:
    """The app's TimedRotatingFileHandler, written by the master: after USR1 only the new file grows."""
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    pidfile = tmp_path / "gunicorn.pid"
    rotated, current = log_dir / "audit.log.1", log_dir / "audit.log"
    conf = tmp_path / "gunicorn_conf.py"
    conf.write_text(ADOPTED_CONF.format(path=str(current)))
    server = Gunicorn(tmp_path, ["--pid", str(pidfile)], conf=conf, app="tests.apps.adopting_app:app")
    before = [f"b{i}" for i in range(100)]
    after = [f"a{i}" for i in range(100)]
    try:
        server.start()
        load = BackgroundLoad(server, [f"/audit?id={rid}" for rid in before], concurrency=4)
        wait_for(lambda: "audit id=b" in text_of(current), 30, "the first audit records in audit.log")
        logrotate(tmp_path, log_dir, pidfile)
        assert set(load.join(120).values()) == {200}
        wait_reopened(server, "/audit?id=usr1-{}", rotated, current, " app.audit audit id=usr1-{}\n")
        assert set(run_load(server, [f"/audit?id={rid}" for rid in after], concurrency=4).values()) == {200}
        assert server.stop() == 0
    finally:
        server.kill_group()

    old, new = rotated.read_text().splitlines(), current.read_text().splitlines()
    misplaced = [line for line in old if line.endswith(tuple(f" id={rid}" for rid in after))]
    assert not misplaced, f"{MISPLACED}: {len(misplaced)} of {2 * len(after)}, first {misplaced[:3]}"
    for rid in before + after:
        for logger in ("app.audit audit", "app.views app"):
            seen = sum(line.endswith(f" {logger} id={rid}") for line in old + new)
            assert seen == 1, f"{logger} id={rid}: {seen} times across both files"
