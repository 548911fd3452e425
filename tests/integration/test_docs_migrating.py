"""docs/migrating.md: every block runs as written and logs what the page says it does.

The pool scripts run as the page shows them, in a directory of their own;
the gunicorn config is served by a real gunicorn, with an app that answers
which log files its worker holds open, as the page has it and with the
``concurrent-log-handler`` class it replaces.
"""

from __future__ import annotations

import ast
import http.client
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Dict, List

import pytest

from tests.docs_blocks import docs_block
from tests.integration.gunicorn_proc import Gunicorn

#: What each pool script's workers log, one record per job.
JOBS = [f"job {n} done" for n in range(4)]
#: The pool scripts' format: "%(process)d %(name)s %(levelname)s %(message)s".
POOL_LINE = re.compile(r"^(?P<pid>\d+) (?P<logger>\S+) (?P<level>[A-Z]+) (?P<message>.*)$")
#: The gunicorn config's format: "%(asctime)s %(process)d %(name)s %(levelname)s %(message)s".
GUNICORN_LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (?P<pid>\d+) (?P<logger>\S+) (?P<level>[A-Z]+) (?P<message>.*)$"
)
CLH_CLASS = "concurrent_log_handler.ConcurrentRotatingFileHandler"
STDLIB_CLASS = "logging.handlers.RotatingFileHandler"


def run_block(name: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Write the block to a script in ``tmp_path`` and run it there; it must exit with 0."""
    block = docs_block(name)
    assert block.lang == "python"
    script = tmp_path / f"{name}.py"
    script.write_text(block.text, encoding="utf-8")
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"{name} exited with {result.returncode}:\n{result.stderr}"
    return result


def parse(path: Path, pattern: re.Pattern[str]) -> List[Dict[str, str]]:
    """Every line of ``path``, each of the block's format (no torn or foreign line)."""
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        match = pattern.match(line)
        assert match is not None, f"a line not of the block's format in {path.name}: {line!r}"
        records.append(match.groupdict())
    return records


def messages(records: List[Dict[str, str]]) -> Counter[str]:
    return Counter(record["message"] for record in records)


# -- from the cookbook's queue recipe ----------------------------------------------------------


def test_the_cookbook_script_writes_each_job_once(tmp_path: Path) -> None:
    result = run_block("migrating-cookbook-before", tmp_path)
    records = parse(tmp_path / "jobs.log", POOL_LINE)
    assert messages(records) == Counter(JOBS)
    assert {(r["logger"], r["level"]) for r in records} == {("job", "INFO")}
    assert "Logging error" not in result.stderr


def test_the_forklog_pool_script_writes_each_job_once_and_reports_no_drop(tmp_path: Path) -> None:
    """The hub replaces queue and listener; the with's terminate() loses nothing; the counters are empty."""
    result = run_block("migrating-cookbook-after", tmp_path)
    records = parse(tmp_path / "jobs.log", POOL_LINE)
    assert messages(records) == Counter(JOBS)
    assert {(r["logger"], r["level"]) for r in records} == {("job", "INFO")}
    assert result.stdout.splitlines() == ["dropped: {} lost: {}"]
    assert "forklog:" not in result.stderr, result.stderr


# -- from concurrent-log-handler ---------------------------------------------------------------


def test_the_concurrent_log_handler_script_writes_each_line_once_beside_its_lock(tmp_path: Path) -> None:
    run_block("migrating-clh-before", tmp_path)
    records = parse(tmp_path / "jobs.log", POOL_LINE)
    assert messages(records) == Counter([*JOBS, "all jobs done"])
    (main,) = [r for r in records if r["logger"] == "main"]
    assert main["pid"] not in {r["pid"] for r in records if r["logger"] == "job"}, "jobs ran in the parent"
    assert (tmp_path / ".__jobs.lock").exists(), "the page names concurrent-log-handler's lock file"


def test_the_rotating_file_handler_script_is_written_by_the_hub(tmp_path: Path) -> None:
    """The same setup_logging() with RotatingFileHandler: adopted in every process, each line once."""
    result = run_block("migrating-clh-after", tmp_path)
    log = tmp_path / "jobs.log"
    records = parse(log, POOL_LINE)
    assert messages(records) == Counter([*JOBS, "all jobs done"])
    (main,) = [r for r in records if r["logger"] == "main"]
    assert main["pid"] not in {r["pid"] for r in records if r["logger"] == "job"}, "jobs ran in the parent"
    # The script prints hub.stats().written: the adopted file took the five records, under its
    # absolute path; the hub's own stream sink took none (the app has a handler of its own).
    written = ast.literal_eval(result.stdout.strip())
    assert isinstance(written, dict)
    assert written == {"streamhandler": 0, str(log.resolve()): 5}
    assert not (tmp_path / ".__jobs.lock").exists()
    assert not (tmp_path / "jobs.log.lock").exists(), "the page says: from its first rotation"
    assert "forklog:" not in result.stderr, result.stderr


# -- gunicorn: logconfig_dict --------------------------------------------------------------------

#: Logs one record a request and answers with the log files its worker holds open ("none").
HELD_FILES_APP = """
import logging
import os

log = logging.getLogger("app")


def held():
    paths = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            paths.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:  # the directory's own descriptor, closed by now
            pass
    return sorted(os.path.basename(p) for p in paths if os.path.basename(p) in ("app.log", ".__app.lock"))


def app(environ, start_response):
    log.info("request %s", environ.get("QUERY_STRING", ""))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [(" ".join(held()) or "none").encode()]
"""

IDS = [f"r{i}" for i in range(12)]


def fetch(port: int, path: str) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read().decode()
        assert response.status == 200, (path, response.status, body)
        return body
    finally:
        conn.close()


@pytest.mark.parametrize("handler_class", [STDLIB_CLASS, CLH_CLASS], ids=["as-on-the-page", "before"])
def test_the_logconfig_dict_handler_is_written_by_the_master_once_switched(
    tmp_path: Path, handler_class: str
) -> None:
    """The page's config: the master writes app.log and no worker holds it; with the old class, each does."""
    conf = docs_block("migrating-gunicorn-conf").text
    assert conf.count(f'"class": "{STDLIB_CLASS}"') == 1
    conf = conf.replace(f'"class": "{STDLIB_CLASS}"', f'"class": "{handler_class}"')
    (tmp_path / "gunicorn_conf.py").write_text(conf, encoding="utf-8")
    (tmp_path / "held_files_app.py").write_text(HELD_FILES_APP, encoding="utf-8")
    server = Gunicorn(
        tmp_path,
        ["--chdir", str(tmp_path)],  # after the harness's own --chdir: the app and app.log are here
        conf=tmp_path / "gunicorn_conf.py",
        app="held_files_app:app",
        env={"FORKLOG_FILE": str(tmp_path / "forklog.log")},
        health="/?health",
        listening=False,  # gunicorn's lines go to app.log, as the config says
    )
    try:
        server.start()
        held = {rid: fetch(server.port, f"/?id={rid}") for rid in IDS}
        assert server.stop() == 0
    finally:
        server.kill_group()
    records = parse(tmp_path / "app.log", GUNICORN_LINE)
    requests = messages([r for r in records if r["logger"] == "app" and r["message"] != "request health"])
    assert requests == Counter(f"request id={rid}" for rid in IDS)
    gunicorn = messages([r for r in records if r["logger"] == "gunicorn.error"])
    assert sum(count for text, count in gunicorn.items() if text.startswith("Starting gunicorn ")) == 1
    assert sum(count for text, count in gunicorn.items() if text.startswith("Booting worker with pid")) == 2
    assert all(count == 1 for count in gunicorn.values()), gunicorn
    if handler_class == STDLIB_CLASS:
        assert set(held.values()) == {"none"}, "a worker holds the log file: the master is not its writer"
        assert not (tmp_path / ".__app.lock").exists()
    else:  # concurrent-log-handler bypasses the hub: each worker writes the file under its own lock
        assert set(held.values()) == {".__app.lock app.log"}
        assert (tmp_path / ".__app.lock").exists()
