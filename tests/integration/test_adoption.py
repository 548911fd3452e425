"""Adoption under a real gunicorn: the logging an unchanged app configures goes through the master."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import tempfile
from collections import Counter
from pathlib import Path
from typing import Dict, List

import pytest

from tests.integration.gunicorn_proc import Gunicorn, run_load, wait_for

#: The whole gunicorn config a user writes: the import, nothing else.
CONF = "from forklog.gunicorn import *  # noqa: F403\nworkers = 4\n"

#: A record of the Django project's "verbose" format ("{asctime} {levelname} {name} {process:d} {message}").
DJANGO_HEAD = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (?P<level>[A-Z]+) (?P<logger>\S+) (?P<pid>\d+) (?P<message>.*)$"
)


def _conf(tmp_path: Path, text: str = CONF) -> Path:
    conf = tmp_path / "conf.py"
    conf.write_text(text)
    return conf


def _records(paths: List[Path]) -> List[Dict[str, object]]:
    """The Django file's records, each with the lines that follow its head (a traceback)."""
    records: List[Dict[str, object]] = []
    for path in paths:
        for line in path.read_text(encoding="utf-8").splitlines():
            match = DJANGO_HEAD.match(line)
            if match is not None:
                records.append({**match.groupdict(), "rest": []})
            else:
                assert records, f"{path.name} starts with a line that is no record's: {line!r}"
                rest = records[-1]["rest"]
                assert isinstance(rest, list)
                rest.append(line)
    return records


def _held_logs(pid: int, directory: Path) -> List[str]:
    """The files under ``directory`` that process ``pid`` holds open."""
    held = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(directory)):
            held.append(target)
    return held


def _workers(master: int) -> List[int]:
    with open(f"/proc/{master}/task/{master}/children") as children:
        return [int(pid) for pid in children.read().split()]


@pytest.mark.parametrize("preload", [False, True], ids=["no-preload", "preload"])
def test_django_logging_is_written_once_by_the_master(tmp_path: Path, preload: bool) -> None:
    """A stock Django LOGGING (a shared 64 KiB rotating file): each record once, whole, by the master."""
    logs = tmp_path / "logs"
    logs.mkdir()
    django_log = logs / "django.log"
    server = Gunicorn(
        tmp_path,
        ["--preload"] if preload else [],
        conf=_conf(tmp_path),
        app="tests.apps.djsite.wsgi:application",
        env={"DJANGO_LOG_FILE": str(django_log), "DJANGO_SETTINGS_MODULE": "tests.apps.djsite.settings"},
    )
    ids = [f"r{i}" for i in range(600)]
    booms = [f"b{i}" for i in range(40)]
    try:
        server.start()
        wait_for(lambda: len(_workers(server.pid)) == 4, 30, "four workers")
        statuses = run_load(server, [f"/log?id={rid}" for rid in ids] + [f"/boom?id={b}" for b in booms])
        assert Counter(statuses.values()) == {200: len(ids), 500: len(booms)}
        for worker in _workers(server.pid):
            assert _held_logs(worker, logs) == [], f"worker {worker} holds a log file"
            assert str(server.log_file) not in _held_logs(worker, tmp_path), "a worker holds the hub's file"
        assert str(django_log) in _held_logs(server.pid, logs), "the master does not write the file"
        assert str(server.log_file) in _held_logs(server.pid, tmp_path)
        assert server.stop() == 0
    finally:
        server.kill_group()
    backups = sorted(logs.glob("django.log.[0-9]*"), key=lambda p: -int(p.suffix[1:]))
    files = [*backups, django_log]  # oldest first
    assert len(backups) >= 3, "the 64 KiB file did not rotate as it filled"
    assert all(p.stat().st_size <= 64 * 1024 for p in files), "a file grew past maxBytes"
    records = _records(files)
    seen = Counter(str(r["message"]) for r in records)
    for rid in ids:
        assert seen[f"order placed id={rid}"] == 1, rid
        assert seen[f"stock low id={rid}"] == 1, rid
        assert seen[f"lookup failed id={rid}"] == 1, rid
        assert seen[f"debug detail id={rid}"] == 0, "DEBUG passed the INFO level LOGGING sets"
    failures = {
        str(r["message"]): r for r in records if r["logger"] == "shop.orders" and r["level"] == "ERROR"
    }
    for rid in ids:
        rest = failures[f"lookup failed id={rid}"]["rest"]
        assert isinstance(rest, list) and rest[0] == "Traceback (most recent call last):"
        assert rest[-1] == f"KeyError: 'missing-{rid}'"
    errors = [r for r in records if r["logger"] == "django.request"]
    assert len(errors) == len(booms), "django.request's 500s, once each (root and django share the file)"
    tails = Counter(r["rest"][-1] for r in errors)  # type: ignore[index]
    assert tails == Counter(f"ValueError: boom-{b}" for b in booms), "a django.request traceback is not whole"
    pids = {int(str(r["pid"])) for r in records}
    assert server.pid not in pids and len(pids) >= 2, "the records were not made by the workers"


def test_flask_dictconfig_recipe_and_app_logger(tmp_path: Path) -> None:
    """Flask's documented dictConfig (wsgi_errors_stream): app.logger's lines once, on the master's stderr."""
    server = Gunicorn(tmp_path, conf=_conf(tmp_path), app="tests.apps.flask_app:app")
    ids = [f"f{i}" for i in range(60)]
    try:
        server.start()
        assert set(run_load(server, [f"/log?id={rid}" for rid in ids]).values()) == {200}
        assert server.stop() == 0
    finally:
        server.kill_group()
    lines = server.stderr().splitlines()
    line = re.compile(
        r"^\[[^]]+\] (?P<level>[A-Z]+) in flask_app: flask (?P<kind>info|warning) id=(?P<id>\S+)$"
    )
    seen = Counter((m["kind"], m["id"]) for m in map(line.match, lines) if m is not None)
    assert seen == Counter({(kind, rid): 1 for rid in ids for kind in ("info", "warning")})
    assert not [text for text in lines if "flask " in text and not line.match(text)], "a torn or foreign line"


@pytest.mark.parametrize("preload", [False, True], ids=["no-preload", "preload"])
def test_structlog_processor_formatter_renders_in_the_worker(tmp_path: Path, preload: bool) -> None:
    """structlog's ProcessorFormatter + JSONRenderer on a FileHandler: JSON data and tracebacks, once each."""
    out = tmp_path / "events.json"
    server = Gunicorn(
        tmp_path,
        ["--preload"] if preload else [],
        conf=_conf(tmp_path),
        app="tests.apps.structlog_app:app",
        env={"STRUCTLOG_FILE": str(out)},
    )
    ids = [f"s{i}" for i in range(80)]
    try:
        server.start()
        assert set(run_load(server, [f"/log?id={rid}" for rid in ids]).values()) == {200}
        assert server.stop() == 0
    finally:
        server.kill_group()
    events = [json.loads(line) for line in out.read_text().splitlines()]
    placed = Counter(e["id"] for e in events if e["event"] == "order placed")
    failed = {e["id"]: e for e in events if e["event"] == "order failed"}
    assert placed == Counter(ids) and sorted(failed) == sorted(ids)
    for event in events:
        if event["event"] == "order placed":
            assert event["items"] == ["a", "b"] and event["total"] == 12.5 and event["pid"] != server.pid
    for rid, event in failed.items():
        assert event["exception"].startswith("Traceback (most recent call last):\n")
        assert event["exception"].endswith(f"ValueError: bad-{rid}")


LOGCONFIG = """
from forklog.gunicorn import *  # noqa: F403

workers = 3
logconfig_dict = {{
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {{"plain": {{"format": "%(levelname)s %(name)s %(process)d %(message)s"}}}},
    "handlers": {{
        "file": {{"class": "logging.FileHandler", "filename": {path!r}, "formatter": "plain"}},
    }},
    "root": {{"level": "INFO", "handlers": ["file"]}},
    "loggers": {{"app.audit": {{"level": "INFO", "handlers": ["file"], "propagate": False}}}},
}}
"""


def test_logconfig_dict_handler_shared_by_two_loggers(tmp_path: Path) -> None:
    """A handler on root and on a propagate=False logger: each record once; gunicorn as without forklog."""
    path = tmp_path / "shared.log"
    server = Gunicorn(
        tmp_path, conf=_conf(tmp_path, LOGCONFIG.format(path=str(path))), app="tests.apps.adopting_app:app"
    )
    ids = [f"c{i}" for i in range(90)]
    try:
        server.start()
        assert set(run_load(server, [f"/audit?id={rid}" for rid in ids]).values()) == {200}
        server.signal(signal.SIGHUP)  # the config runs again in the master: still one sink
        wait_for(lambda: "Handling signal: hup" in server.stderr(), 30, "the HUP")
        more = [f"d{i}" for i in range(30)]
        assert set(run_load(server, [f"/audit?id={rid}" for rid in more]).values()) == {200}
        assert server.stop() == 0
    finally:
        server.kill_group()
    lines = path.read_text().splitlines()
    for rid in ids + more:
        assert sum(line.endswith(f" audit id={rid}") for line in lines) == 1, rid
        assert sum(line.endswith(f" app id={rid}") for line in lines) == 1, rid
    # As without forklog: the dict names no gunicorn logger, so gunicorn.error keeps its own stderr
    # handler (and does not propagate): its lines are on stderr, once each, and not in the file.
    assert not [line for line in lines if "Booting worker" in line]
    assert sum("Booting worker" in line for line in server.stderr().splitlines()) == 6


#: The interpreter may live where nobody can read it (under /root): what gunicorn's worker imports
#: lazily at its start (random.seed() imports _sha2 on 3.13) is imported by the master, as root.
NOBODY_CONF = CONF + "import hashlib\nimport random\n\nrandom.seed()\n"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to start gunicorn with --user nobody")
def test_a_worker_cannot_make_a_root_master_open_a_file(tmp_path: Path) -> None:
    """Master root, workers nobody: the master opens no file a worker names; the worker keeps its own."""
    base = Path(tempfile.mkdtemp(prefix="forklog-user-"))
    try:
        base.chmod(0o755)
        closed = base / "closed"
        closed.mkdir(mode=0o700)
        public = base / "public"
        public.mkdir()
        public.chmod(0o777)
        secret, allowed = closed / "secret.log", public / "allowed.log"
        server = Gunicorn(
            tmp_path,
            ["--user", "nobody", "--group", "nogroup", "--preload"],  # the app is loaded by root
            conf=_conf(tmp_path, NOBODY_CONF),
            app="tests.apps.adopting_app:app",
            env={"ADOPTING_APP_LAZY_FILES": str(allowed)},
        )
        ids = [f"u{i}" for i in range(20)]
        try:
            server.start()
            assert set(run_load(server, [f"/audit?id={rid}" for rid in ids], concurrency=4).values()) == {200}
            assert server.get(f"/forge?path={secret}") == 200  # a compromised worker's own frame
            wait_for(lambda: f"target {secret} asked for by pid" in server.stderr(), 30, "the refusal")
            assert server.stop() == 0
        finally:
            server.kill_group()
        assert not secret.exists(), "the root master opened a file a worker named"
        # The worker wrote its own file, as without forklog, and said why on stderr.
        written = Counter(line.split(" ", 1)[1] for line in allowed.read_text().splitlines())
        assert written == Counter(f"audit id={rid}" for rid in ids)
        assert allowed.stat().st_uid == 65534, "written by a worker, not by the root master"
        assert f"the handler for {allowed} stays in this process" in server.stderr()
    finally:
        shutil.rmtree(base, ignore_errors=True)


SINKLESS = """
import forklog.gunicorn
from forklog.gunicorn import *  # noqa: F403

forklog.gunicorn.configure(handlers=lambda: [])
"""


def test_a_config_that_would_lose_records_is_named_at_start(tmp_path: Path) -> None:
    """A hub with no sink while loggers send to it: said on stderr at start; its records reported unrouted."""
    server = Gunicorn(
        tmp_path, conf=_conf(tmp_path, SINKLESS), app="tests.apps.adopting_app:app", listening=False
    )
    try:
        server.start()
        assert server.stop() == 0
    finally:
        server.kill_group()
    stderr = server.stderr()
    assert "forklog: the hub has no sink, yet loggers gunicorn.access, gunicorn.error, root send" in stderr
    assert "records reached the hub and no sink took them" in stderr


@pytest.mark.parametrize("console_format", ["json", "text"])
def test_adopted_file_handlers_write_to_the_console_in_containers(
    tmp_path: Path, console_format: str
) -> None:
    """Issue 23, item 3: ``FORKLOG_ADOPTED_FILES=console``: Django's LOGGING file lines, 500 tracebacks
    among them, reach the console once each, and none the file. A text console gets the app's line
    unchanged; a JSON console one object per record, the app's line (traceback and all) as its
    ``message``, beside the record's level, logger and pid."""
    django_log = tmp_path / "django.log"
    server = Gunicorn(
        tmp_path,
        conf=_conf(tmp_path),
        app="tests.apps.djsite.wsgi:application",
        env={
            "DJANGO_LOG_FILE": str(django_log),
            "DJANGO_SETTINGS_MODULE": "tests.apps.djsite.settings",
            "FORKLOG_ADOPTED_FILES": "console",
            "FORKLOG_CONSOLE": "stdout",
            "FORKLOG_CONSOLE_FORMAT": console_format,
        },
    )
    ids, booms = [f"r{i}" for i in range(40)], [f"b{i}" for i in range(5)]
    try:
        server.start()
        statuses = run_load(server, [f"/log?id={rid}" for rid in ids] + [f"/boom?id={b}" for b in booms])
        assert Counter(statuses.values()) == {200: len(ids), 500: len(booms)}
        assert server.stop() == 0
    finally:
        server.kill_group()
    # The handler made its (empty) file when dictConfig built it in the worker, as without forklog.
    assert django_log.read_bytes() == b"", "a line was written to the file"
    output = server.stderr()  # stdout and stderr, as xprocess keeps them
    if console_format == "json":
        objects = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
        lines = []
        for obj in objects:
            head = DJANGO_HEAD.match(str(obj["message"]).split("\n", 1)[0])
            if head is None or obj["logger"] not in ("shop.orders", "django.request"):
                continue
            assert (obj["level"], obj["logger"], str(obj["pid"])) == (
                head["level"],
                head["logger"],
                head["pid"],
            )
            lines.append(str(obj["message"]))
    else:
        lines = []
        for line in output.splitlines():
            if DJANGO_HEAD.match(line):
                lines.append(line)
            elif lines and not line.startswith(("{", "[", "20")):
                lines[-1] += "\n" + line  # a traceback's lines follow their record's head
    placed = Counter(
        m[1] for m in (re.search(r" INFO shop\.orders \d+ order placed id=(\S+)$", x) for x in lines) if m
    )
    assert placed == Counter(ids), "each INFO line once (only the file handler takes INFO)"
    failed = [x for x in lines if " ERROR shop.orders " in x and "lookup failed" in x]
    assert {x.rsplit("\n", 1)[-1] for x in failed} == {f"KeyError: 'missing-{rid}'" for rid in ids}
    assert all("\nTraceback (most recent call last):\n" in x for x in failed), "a traceback lost its lines"
    request = [x for x in lines if " ERROR django.request " in x]
    assert {x.rsplit("\n", 1)[-1] for x in request} >= {f"ValueError: boom-{b}" for b in booms}
