"""forklog's hooks imported into a config that then defines its own."""

from __future__ import annotations

import signal
from pathlib import Path

from tests.integration.gunicorn_proc import Accounting, Gunicorn, run_load, wait_for
from tests.integration.test_gunicorn import BIG, N, burst_paths, ids

CONFIG = """
import logging
import os

from forklog.gunicorn import *  # noqa: F403

workers = 3
accesslog = "-"
MARKS = os.environ["MARKS"]


def mark(text):
    with open(MARKS, "a") as f:
        f.write(text + "\\n")


# Defined after the import, not calling forklog's: they replace its hooks.
def on_starting(server):
    mark("on_starting")


def post_fork(server, worker):
    mark("post_fork")
    logging.getLogger("myapp").info("worker %s forked", worker.pid)


def post_worker_init(worker):
    mark("ready")  # signals are set up: a TERM from now on runs worker_exit


def worker_exit(server, worker):
    mark("worker_exit")


def on_exit(server):
    mark("on_exit")
"""


def test_hooks_defined_after_the_import_still_deliver_everything(tmp_path: Path) -> None:
    """A config's own hooks replace forklog's; every record, the shutdown tail included, still arrives."""
    conf = tmp_path / "existing_conf.py"
    conf.write_text(CONFIG)
    marks = tmp_path / "marks"
    server = Gunicorn(tmp_path, conf=conf, env={"MARKS": str(marks)})
    try:
        server.start()
        # gunicorn forks its workers a random fraction of a second apart; one
        # TERMed before it set up its signal handlers dies without worker_exit.
        wait_for(lambda: marks.exists() and marks.read_text().count("ready") == 3, 30, "three workers ready")
        statuses = ids(run_load(server, burst_paths("e", 60)))
        assert server.stop() == 0
    finally:
        server.kill_group()
    lines = marks.read_text().splitlines()
    assert lines.count("on_starting") == 1 and lines.count("on_exit") == 1
    assert lines.count("post_fork") == 3 and lines.count("worker_exit") == 3
    accounting = Accounting(server.log_lines())
    accounting.check(statuses, N, BIG)
    messages = [r["message"] for r in accounting.records]
    assert sum(m.startswith("worker ") and m.endswith(" forked") for m in messages) == 3
    assert messages[-1] == "Shutting down: Master", "the tail was lost"


def test_gunicorn_settings_are_honoured(tmp_path: Path) -> None:
    """errorlog and accesslog files get gunicorn's lines in gunicorn's formats; access_log_format is used."""
    error_log, access_log = tmp_path / "error.log", tmp_path / "access.log"
    server = Gunicorn(
        tmp_path,
        [
            "-w",
            "2",
            "--error-logfile",
            str(error_log),
            "--access-logfile",
            str(access_log),
            "--access-logformat",
            "ACCESS %(m)s %(U)s?%(q)s %(s)s",
        ],
    )
    try:
        server.start()
        statuses = ids(run_load(server, burst_paths("s", 30)))
        assert server.stop() == 0
    finally:
        server.kill_group()
    accounting = Accounting(server.log_lines())
    accounting.check(statuses, N, BIG)
    errors = error_log.read_text().splitlines()
    assert any("] [INFO] Booting worker with pid:" in line for line in errors)
    assert errors[-1].endswith("[INFO] Shutting down: Master")
    assert not any("burst" in line for line in errors), "app records in gunicorn's error log"
    access = access_log.read_text().splitlines()
    assert all(line.startswith("ACCESS GET /") and line.endswith(" 200") for line in access), access[:3]
    for rid in statuses:
        assert sum(f"&id={rid} " in line for line in access) == 1, rid
    assert len(access) == len(statuses) + 1  # and the readiness probe


def test_loglevel_is_honoured(tmp_path: Path) -> None:
    """--log-level warning silences gunicorn's INFO lines; the app's records are untouched."""
    server = Gunicorn(tmp_path, ["-w", "2", "--log-level", "warning"], listening=False)
    try:
        server.start()
        statuses = ids(run_load(server, burst_paths("l", 20)))
        assert server.stop() == 0
    finally:
        server.kill_group()
    accounting = Accounting(server.log_lines())
    accounting.check(statuses, N, BIG)
    assert not accounting.lines_of("gunicorn.error"), "INFO lines of gunicorn.error were written"


def test_capture_output_turns_prints_into_records(tmp_path: Path) -> None:
    """capture_output: a worker's print() and sys.stderr lines arrive through the hub, one record per line."""
    server = Gunicorn(
        tmp_path,
        ["-w", "2", "--capture-output", "--error-logfile", str(tmp_path / "error.log")],
        app="tests.apps.wsgi_app:app",
        listening=False,  # gunicorn's lines go to error.log
    )
    try:
        server.start()
        statuses = run_load(server, [f"/print?p{k}" for k in range(20)])
        assert set(statuses.values()) == {200}
        assert server.stop() == 0
    finally:
        server.kill_group()
    accounting = Accounting(server.log_lines())
    assert not accounting.torn
    for k in range(20):
        for logger, level, message in (
            ("stdout", "INFO", f"printed p{k} line one"),
            ("stdout", "INFO", f"printed p{k} line two"),
            ("stderr", "WARNING", f"stderr p{k}"),
        ):
            hits = [r for r in accounting.records if r["message"] == message]
            assert len(hits) == 1, message
            assert (hits[0]["logger"], hits[0]["level"]) == (logger, level)


LOGCONFIG = """
import os

from forklog.gunicorn import *  # noqa: F403

workers = 3
logconfig_dict = {
    "version": 1,
    "formatters": {
        "plain": {"format": "%(asctime)s [%(levelname)s] %(name)s %(process)d %(threadName)s - %(message)s"},
    },
    "handlers": {
        "everything": {
            "class": "logging.FileHandler", "filename": os.environ["EVERYTHING"], "formatter": "plain",
            "level": "DEBUG",
        },
        "access": {"class": "logging.FileHandler", "filename": os.environ["ACCESS"], "formatter": "plain"},
    },
    "root": {"level": "DEBUG", "handlers": ["everything"]},
    "loggers": {
        "gunicorn.error": {"level": "INFO", "handlers": [], "propagate": True},
        "gunicorn.access": {"level": "INFO", "handlers": ["access"], "propagate": False},
    },
}
"""


def test_logconfig_dict_handlers_become_sinks(tmp_path: Path) -> None:
    """logconfig_dict's handlers: written by the master only, kept across HUP, given exactly their records."""
    conf = tmp_path / "logconfig_conf.py"
    conf.write_text(LOGCONFIG)
    everything, access = tmp_path / "everything.log", tmp_path / "access.log"
    server = Gunicorn(
        tmp_path, conf=conf, env={"EVERYTHING": str(everything), "ACCESS": str(access)}, listening=False
    )
    server.log_file = everything
    try:
        server.start()
        first = ids(run_load(server, burst_paths("c", 40)))
        server.signal(signal.SIGHUP)
        wait_for(lambda: "Handling signal: hup" in everything.read_text(), 30, "the HUP")
        server.log_file = access  # access lines go to their own file only
        server.wait_logged("after-hup")
        second = ids(run_load(server, burst_paths("d", 40)))
        assert server.stop() == 0
    finally:
        server.kill_group()
    statuses = {**first, **second}
    lines = everything.read_text().splitlines()
    accounting = Accounting(lines)
    assert not accounting.torn
    for rid in statuses:
        assert accounting.burst.get(rid) == {i: 1 for i in range(N)}, rid
        assert accounting.big.get(rid) == [BIG], rid
    assert not accounting.lines_of("gunicorn.access"), "access lines reached root despite propagate=False"
    assert sum(r["message"].startswith("Booting worker") for r in accounting.records) == 6
    access_lines = access.read_text().splitlines()
    for rid in statuses:
        assert sum(f"id={rid} " in line for line in access_lines) == 1, rid
