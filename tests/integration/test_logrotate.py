"""logrotate (the real binary) with the shipped config, during load: nothing lost, nothing misplaced."""

from __future__ import annotations

import shutil
import subprocess
import threading
from pathlib import Path
from typing import Dict, List

from tests.integration.gunicorn_proc import REPO, Accounting, Gunicorn, run_load
from tests.integration.test_gunicorn import BIG, N, burst_paths, ids

LOGROTATE = shutil.which("logrotate") or "/usr/sbin/logrotate"


def shipped_config(log_dir: Path, pidfile: Path) -> str:
    """deploy/logrotate/forklog as shipped, with this test's two paths (logrotate -f rotates it now)."""
    text = (REPO / "deploy" / "logrotate" / "forklog").read_text()
    return text.replace("/srv/forklog-demo/logs", str(log_dir)).replace(
        "/run/forklog-demo/gunicorn.pid", str(pidfile)
    )


def test_logrotate_create_and_usr1_under_load(tmp_path: Path) -> None:
    """Rotation mid-load: every record once across both files; after USR1 only the new file grows."""
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    pidfile = tmp_path / "gunicorn.pid"
    conf = tmp_path / "logrotate.conf"
    conf.write_text(shipped_config(log_dir, pidfile))
    conf.chmod(0o644)
    server = Gunicorn(
        tmp_path, ["-w", "3", "--pid", str(pidfile)], env={"FORKLOG_FILE": str(log_dir / "app.log")}
    )
    server.log_file = log_dir / "app.log"
    try:
        server.start()
        results: Dict[str, int] = {}

        def load() -> None:
            results.update(run_load(server, burst_paths("r", 300), concurrency=4))

        thread = threading.Thread(target=load)
        thread.start()
        while not (server.log_file.exists() and server.log_file.stat().st_size > 300_000):
            thread.join(0.01)
        rotate = subprocess.run(
            [LOGROTATE, "-v", "-f", "-s", str(tmp_path / "state"), str(conf)],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert rotate.returncode == 0, rotate.stderr
        thread.join(120)
        server.wait_logged("after-usr1")
        after = ids(run_load(server, burst_paths("after", 50), concurrency=2))
        assert server.stop() == 0
    finally:
        server.kill_group()

    # delaycompress: the first rotation leaves app.log.1 as it is (compress takes it next time).
    rotated, current = log_dir / "app.log.1", log_dir / "app.log"
    assert rotated.exists() and current.exists() and not list(log_dir.glob("*.gz"))
    assert oct(current.stat().st_mode & 0o777) == "0o640"
    for path in (rotated, current):
        assert b"\0" not in path.read_bytes(), f"NUL bytes in {path.name}"
    lines: List[str] = rotated.read_text().splitlines() + current.read_text().splitlines()
    accounting = Accounting(lines)
    accounting.check({**ids(results), **after}, N, BIG)
    old = rotated.read_text()
    assert "Handling signal: usr1" in current.read_text() or "Handling signal: usr1" in old
    assert not any(f"id={rid} " in old for rid in after), "a record written to the rotated file after USR1"
