"""gunicorn lifecycle events with the hub: preload, scaling, timeouts."""

from __future__ import annotations

import contextlib
import signal
import threading
from pathlib import Path
from typing import List

import psutil

from tests.integration.gunicorn_proc import Accounting, BackgroundLoad, Gunicorn, run_load, wait_for
from tests.integration.test_gunicorn import BIG, N, burst_paths, ids

APP = "tests.apps.wsgi_app:app"


def start(servers: List[Gunicorn], tmp_path: Path, *args: str, **kwargs: object) -> Gunicorn:
    server = Gunicorn(tmp_path, args, app=APP, **kwargs)  # type: ignore[arg-type]
    servers.append(server)
    return server.start()


def test_preload_app_logs_at_import_once(servers: List[Gunicorn], tmp_path: Path) -> None:
    """preload_app: the master imports the app before on_starting; its import-time record arrives once."""
    server = start(servers, tmp_path, "-w", "3", "--preload")
    statuses = ids(run_load(server, burst_paths("p", 60)))
    assert server.stop() == 0
    accounting = Accounting(server.log_lines())
    accounting.check(statuses, N, BIG)
    imported = [r for r in accounting.records if r["message"].startswith("app imported in pid")]
    assert [r["message"] for r in imported] == [f"app imported in pid {server.pid}"]
    assert imported[0]["pid"] == str(server.pid)


def test_ttin_ttou_under_load(servers: List[Gunicorn], tmp_path: Path) -> None:
    """TTIN and TTOU while requests flow: workers come and go, no record is lost."""
    server = start(servers, tmp_path, "-w", "2")
    load = BackgroundLoad(server, burst_paths("t", 400))
    master = psutil.Process(server.pid)
    # Each signal moves the worker count by one; wait for each before the next.
    for sig, count in ((signal.SIGTTIN, 3), (signal.SIGTTIN, 4), (signal.SIGTTOU, 3), (signal.SIGTTOU, 2)):
        server.signal(sig)

        def workers(count: int = count) -> bool:
            return len(master.children()) == count

        wait_for(workers, 30, f"{count} workers")
    statuses = ids(load.join())
    assert server.stop() == 0
    assert set(statuses.values()) == {200}
    accounting = Accounting(server.log_lines())
    accounting.check(statuses, N, BIG)
    assert len(accounting.seqs) >= 3, "records from several generations of workers"


def test_worker_timeout_logs_the_stuck_stack(servers: List[Gunicorn], tmp_path: Path) -> None:
    """worker_abort writes the stuck worker's stack through the hub before gunicorn kills it."""
    server = start(servers, tmp_path, "-w", "1", "--timeout", "2")
    hang = threading.Thread(target=server.get, args=("/hang", 30))
    hang.start()
    needle = "timed out; stack of every thread"
    wait_for(lambda: needle in server.log_file.read_text(errors="replace"), 30, "the stuck worker's stack")
    hang.join(30)
    assert server.get("/") == 200, "a new worker serves"
    assert server.stop() == 0
    text = server.log_file.read_text()
    report = text[text.index(needle) :]
    assert "in sleep_forever" in report and "time.sleep(60)" in report


def test_five_hups_under_load(servers: List[Gunicorn], tmp_path: Path) -> None:
    """Five HUPs while requests flow: one hub (no new threads), no lost or doubled record or line.

    Small records, as in test_hup_in_the_middle_of_the_load: the subject is
    the reload, not what the pipe absorbs while the master forks.
    """
    server = start(servers, tmp_path, "-w", "3")
    master = psutil.Process(server.pid)
    threads = master.num_threads()
    load = BackgroundLoad(server, burst_paths("h", 600, big=0))
    for hup in range(1, 6):
        server.signal(signal.SIGHUP)

        def handled(n: int = hup) -> bool:
            return server.log_file.read_text().count("Handling signal: hup") == n

        wait_for(handled, 30, f"HUP {hup}")
        server.wait_logged(f"hup{hup}")
    statuses = ids(load.join())
    assert master.num_threads() == threads, "a HUP started another hub"
    assert server.stop() == 0
    accounting = Accounting(server.log_lines())
    accounting.check(statuses, N, BIG, without_big=statuses)
    master_lines = [(r["date"], r["message"]) for r in accounting.records if r["pid"] == str(server.pid)]
    assert len(master_lines) == len(set(master_lines)), "a gunicorn line written twice"
    assert (
        sum(m == "Starting gunicorn 27.0.1" or m.startswith("Starting gunicorn") for _d, m in master_lines)
        == 1
    )


def test_daemon_with_pidfile(tmp_path: Path) -> None:
    """--daemon: the hub runs in the daemonized master (after the double fork); TERM drains it."""
    pidfile = tmp_path / "gunicorn.pid"
    server = Gunicorn(tmp_path, ["-w", "2", "--daemon", "--pid", str(pidfile)], app=APP)
    try:
        server.start(detaches=True)
        wait_for(pidfile.exists, 30, "the pidfile")
        daemon = psutil.Process(int(pidfile.read_text()))
        assert daemon.pid != server.pid, "gunicorn -D runs the master in another process"
        statuses = ids(run_load(server, burst_paths("d", 60)))
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(server.graceful_timeout + 5)
    finally:
        if pidfile.exists():
            with contextlib.suppress(psutil.NoSuchProcess, ValueError):
                psutil.Process(int(pidfile.read_text())).kill()
        server.kill_group()
    accounting = Accounting(server.log_lines())
    accounting.check(statuses, N, BIG)
    master = [r for r in accounting.records if r["pid"] == str(daemon.pid)]
    assert master[0]["message"].startswith("Starting gunicorn")
    assert master[-1]["message"] == "Shutting down: Master", "the tail was lost"
