"""Issue 21, item 1: a worker's links never make a root master write, create or lock a root-only path.

A real gunicorn, root master, ``nobody`` workers, ``--preload`` (the master
writes the app's own rotating file), the app's directory and the hub's own
log directory owned by ``nobody``. A worker replaces the logs, a backup and
the locks with links into a root-only directory; then the workers log
enough to rotate, past the sinks' once-a-second check of their path. The
root-only directory gains no entry and its 0600 file keeps its content,
inode and mtime, and records keep reaching the console.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

from tests.integration.gunicorn_proc import Gunicorn, wait_for
from tests.integration.test_hostile_worker import another_worker_is_heard, master_peak, root_gunicorn

NOBODY = 65534


def test_links_planted_by_a_worker_are_never_followed_by_the_root_master(tmp_path: Path) -> None:
    base = Path(tempfile.mkdtemp(prefix="forklog-links-"))
    try:
        base.chmod(0o755)
        closed = base / "closed"
        closed.mkdir(mode=0o700)
        sentinel = closed / "secret"
        sentinel.write_text("root's own\n")
        sentinel.chmod(0o600)
        before = sentinel.stat()
        closed_before = closed.stat()
        app_dir, hub_dir = base / "app", base / "logs"
        for directory in (app_dir, hub_dir):
            directory.mkdir()
            os.chown(directory, NOBODY, -1)
        server = root_gunicorn(
            tmp_path,
            "tests.apps.symlink_app:app",
            "/mark?id=ready",
            {
                "SYMLINK_APP_DIR": str(app_dir),
                "SYMLINK_APP_TARGETS": f"{closed / 'cron'}:{sentinel}",
                "FORKLOG_FILE": str(hub_dir / "app.log"),
                "FORKLOG_MAX_BYTES": "20000",
                "FORKLOG_BACKUP_COUNT": "2",
            },
        )
        try:
            server.start()
            assert server.get("/log?n=10") == 200
            wait_for((app_dir / "app.log").exists, 5, "the app's file")
            peak = master_peak(server)
            attacker = server.served_by("/plant")
            assert attacker, "the worker planting the links did not answer"
            deadline = time.monotonic() + 2.5  # past the sinks' check of their path, once a second
            while time.monotonic() < deadline:
                assert server.get("/log?n=40") == 200  # 40 lines of 4000 bytes a file: rotations
                assert server.get("/mark?id=during") == 200
            another_worker_is_heard(
                server,
                attacker,
                "after the links were planted",
                lambda mark_id: f"mark {mark_id}" in server.stderr(),
            )
            grown = master_peak(server) - peak
            assert grown < 16 << 20, f"the master's peak RSS grew by {grown >> 20} MiB"
            assert server.alive(), "gunicorn's master is gone"
            assert server.stop() == 0
        finally:
            server.kill_group()
        assert sorted(os.listdir(closed)) == ["secret"], "the root master created a file through a link"
        closed_after = closed.stat()
        assert (closed_after.st_ino, closed_after.st_mtime_ns) == (
            closed_before.st_ino,
            closed_before.st_mtime_ns,
        )
        after = sentinel.stat()
        assert sentinel.read_text() == "root's own\n", "the root master wrote through a link"
        assert (after.st_ino, after.st_mtime_ns, after.st_size) == (
            before.st_ino,
            before.st_mtime_ns,
            before.st_size,
        )
        stderr = server.stderr()
        assert "Unhandled exception in main loop" not in stderr, stderr[-2000:]
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_directories_forklog_makes_are_not_open_to_everyone(tmp_path: Path) -> None:
    """Under umask 0, the log directory (every level) forklog makes has file_mode's bits plus search: 0750."""
    server = Gunicorn(tmp_path, env={"FORKLOG_FILE": str(tmp_path / "made" / "deeper" / "app.log")})
    old = os.umask(0)
    try:
        server.start()
    finally:
        os.umask(old)
    try:
        assert server.get("/health") == 200
        assert server.stop() == 0
    finally:
        server.kill_group()
    for level in (tmp_path / "made", tmp_path / "made" / "deeper"):
        assert level.stat().st_mode & 0o777 == 0o750, oct(level.stat().st_mode)
    assert (tmp_path / "made" / "deeper" / "app.log").stat().st_mode & 0o777 == 0o640
