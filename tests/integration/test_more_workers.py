"""The tornado worker and gunicorn's native asgi worker: every record once, shutdown included."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import List

import pytest

from tests.integration.gunicorn_proc import Accounting, Gunicorn, gunicorn_version, run_load
from tests.integration.test_gunicorn import BIG, N, burst_paths, ids
from tests.support import wait_for

#: gunicorn's native asgi worker arrived in gunicorn 24 (which needs Python 3.10+).
NATIVE_ASGI = gunicorn_version() >= (24, 0)


@pytest.mark.parametrize(
    ("worker_class", "app"), [("tornado", "app:app"), ("asgi", "tests.apps.asgi_app:app")]
)
def test_worker_class(servers: List[Gunicorn], tmp_path: Path, worker_class: str, app: str) -> None:
    """Each request's records once, in order; each worker's last line arrives."""
    server = Gunicorn(tmp_path, ["-w", "2", "-k", worker_class], app=app)
    servers.append(server)
    if worker_class == "asgi" and not NATIVE_ASGI:
        # gunicorn 23 (Python 3.9) refuses the class at start: it must exit at
        # once with gunicorn's own message, the hub keeping nothing alive.
        result = subprocess.run(
            server.argv, check=False, env=server.env, cwd=tmp_path, capture_output=True, text=True, timeout=60
        )
        assert result.returncode != 0
        assert "asgi" in result.stderr and "invalid or not found" in result.stderr, result.stderr
        return
    server.start()
    statuses = ids(run_load(server, burst_paths(worker_class[0], 100)))
    wait_until_every_worker_serves(server, 2)
    assert server.stop() == 0
    accounting = Accounting(server.log_lines())
    assert not accounting.torn
    for rid, status in statuses.items():
        assert status == 200
        assert accounting.burst.get(rid) == {i: 1 for i in range(N)}, rid
        assert accounting.big.get(rid) == [BIG], rid
    for key, seqs in accounting.seqs_by_thread.items():
        assert seqs == sorted(seqs), key
    errors = [r["message"] for r in accounting.lines_of("gunicorn.error")]
    booted = {m.rsplit(" ", 1)[1] for m in errors if m.startswith("Booting worker with pid")}
    assert len(booted) == 2
    for pid in booted:
        assert f"Worker exiting (pid: {pid})" in errors, pid


def wait_until_every_worker_serves(server: Gunicorn, workers: int) -> None:
    """Send /health until each booted worker has answered one.

    A worker TERMed while it is still starting, before gunicorn set up its
    signal handlers, dies without its "Worker exiting" line (gunicorn's
    behaviour, with or without forklog): on a loaded machine the second
    worker may still be starting when the load is over.
    """

    def all_serving() -> bool:
        server.get("/health")
        records = Accounting(server.log_lines()).records
        booted = {r["pid"] for r in records if r["message"].startswith("Booting worker with pid")}
        serving = {r["pid"] for r in records if "GET /health" in r["message"]}
        return len(booted) == workers and booted <= serving

    wait_for(all_serving, 60, f"{workers} workers serving", interval=0.02)
