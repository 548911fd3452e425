"""USR2: the old and the new master log side by side into the same rotating file."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import tarfile
import threading
from pathlib import Path
from typing import Dict, List

import psutil
import pytest

from tests.integration.gunicorn_proc import REPO, Accounting, Gunicorn, wait_for

#: The main branch before the master worked relative to a held directory (issue 21,
#: item 1): an old master of that code and a new one must still share one rotation lock.
BEFORE_HELD_DIRECTORIES = "f49c59f"


def rotated_in_order(log_file: Path) -> List[str]:
    """Every line of app.log and its rotated files, oldest file first."""
    backups = sorted(log_file.parent.glob(log_file.name + ".*[0-9]"), key=lambda p: -int(p.suffix[1:]))
    lines: List[str] = []
    for path in [*backups, log_file]:
        lines += path.read_text().splitlines()
    return lines


def code_of(revision: str, into: Path) -> Path:
    """The ``src`` directory of ``revision`` of this repository, extracted under ``into``."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", revision, "src"], check=True, capture_output=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


@pytest.mark.parametrize("old_code", ["this code", BEFORE_HELD_DIRECTORIES])
def test_usr2_two_masters_share_the_file(tmp_path: Path, old_code: str) -> None:
    """Both masters write and rotate one file: no torn line, no record lost or doubled, no file clobbered.

    The old master may run an older forklog (the one before rotation worked
    relative to a held directory): the re-executed master imports this one.
    """
    code = tmp_path / "code"  # on PYTHONPATH: the old master's forklog, then the new one's
    source = REPO / "src" if old_code == "this code" else code_of(old_code, tmp_path / "old")
    code.symlink_to(source)
    server = Gunicorn(
        tmp_path,
        ["-w", "2"],
        env={"FORKLOG_MAX_BYTES": "200000", "FORKLOG_BACKUP_COUNT": "1000", "PYTHONPATH": str(code)},
    )
    results: Dict[str, int] = {}
    lock = threading.Lock()
    stop = threading.Event()

    def client(worker: int) -> None:
        for k in range(100_000):
            if stop.is_set():
                return
            rid = f"u{worker}-{k}"
            status = server.get(f"/burst?n=6&big=5000&id={rid}")
            with lock:
                results[rid] = status

    clients = [threading.Thread(target=client, args=(w,)) for w in range(3)]
    try:
        server.start()
        old = psutil.Process(server.pid)
        for thread in clients:
            thread.start()
        wait_for(lambda: len(results) >= 100, 30, "load on the old master")
        code.unlink()
        code.symlink_to(REPO / "src")  # what gunicorn re-executes imports this code
        server.signal(signal.SIGUSR2)

        def new_master_serving() -> bool:
            masters = [p for p in old.children() if p.children()]
            return bool(masters) and len(masters[0].children()) == 2

        wait_for(new_master_serving, 30, "the new master and its workers")
        new = next(p for p in old.children() if p.children())
        seen = len(results)
        wait_for(lambda: len(results) >= seen + 300, 60, "load on both masters")
        old.send_signal(signal.SIGTERM)
        old.wait(30)
        seen = len(results)
        wait_for(lambda: len(results) >= seen + 100, 60, "load on the new master alone")
        stop.set()
        for thread in clients:
            thread.join(60)
        new.send_signal(signal.SIGTERM)
        new.wait(30)
    finally:
        stop.set()
        server.kill_group()

    lines = rotated_in_order(server.log_file)
    accounting = Accounting(lines)
    answered = {rid: status for rid, status in results.items() if status == 200}
    assert len(answered) >= 500
    accounting.check(answered, 6, 5000)
    pids = {r["pid"] for r in accounting.records if "Starting gunicorn" in r["message"]}
    assert pids == {str(old.pid), str(new.pid)}, "both masters logged"
    assert os.path.realpath(code) == str(REPO / "src")
    assert len(list(tmp_path.glob("app.log.*[0-9]"))) >= 5, "the file rotated while both wrote"
