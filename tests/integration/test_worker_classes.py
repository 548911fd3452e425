"""Worker classes whose processes use no feeder thread, or die without a word."""

from __future__ import annotations

import re
from pathlib import Path
from typing import List

from tests.integration.gunicorn_proc import Accounting, Gunicorn, run_load
from tests.integration.test_gunicorn import BIG, N, burst_paths, ids
from tests.integration.test_more_workers import wait_until_every_worker_serves


def test_gevent_without_priming(servers: List[Gunicorn], tmp_path: Path) -> None:
    """H13/H18: gevent patches threading after post_fork; with no feeder thread, every record arrives."""
    server = Gunicorn(tmp_path, ["-w", "2", "-k", "gevent"], graceful_timeout=3)
    servers.append(server)
    server.start()
    statuses = ids(run_load(server, burst_paths("g", 120)))
    wait_until_every_worker_serves(server, 2)
    assert server.stop() == 0
    accounting = Accounting(server.log_lines())
    accounting.check(statuses, N, BIG)
    # Every worker says its last line. (One TERMed while still starting,
    # before gunicorn set its signal handlers, would die without it, forklog
    # or not: the stop waits until each worker has served a request.)
    errors = [r["message"] for r in accounting.lines_of("gunicorn.error")]
    booted = {m.rsplit(" ", 1)[1] for m in errors if m.startswith("Booting worker with pid")}
    assert len(booted) == 2
    for pid in booted:
        assert f"Worker exiting (pid: {pid})" in errors, pid


def test_uvicorn_worker_records_before_term_arrive(servers: List[Gunicorn], tmp_path: Path) -> None:
    """H19: uvicorn workers die by a re-raised SIGTERM (no worker_exit, no atexit); nothing is lost."""
    server = Gunicorn(
        tmp_path, ["-w", "2", "-k", "uvicorn_worker.UvicornWorker"], app="tests.apps.asgi_app:app"
    )
    servers.append(server)
    server.start()
    statuses = ids(run_load(server, burst_paths("u", 120)))
    assert server.stop() == 0
    accounting = Accounting(server.log_lines())
    # uvicorn logs access lines itself (uvicorn.access), not through gunicorn.access.
    for rid, status in statuses.items():
        assert status == 200
        assert accounting.burst.get(rid) == {i: 1 for i in range(N)}, rid
        assert accounting.big.get(rid) == [BIG], rid
    assert not accounting.torn
    messages = [r["message"] for r in accounting.records]
    worker_pids = {r["pid"] for r in accounting.records if r["message"].startswith("lifespan startup")}
    assert len(worker_pids) == 2
    for pid in worker_pids:
        # Logged by each worker as it shuts down, after the TERM: they reach the file.
        assert f"lifespan shutdown in pid {pid}" in messages
        assert any(re.match(rf"Finished server process \[{pid}\]", m) for m in messages)
