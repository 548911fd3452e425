"""`python -m forklog check`: a gunicorn config loaded as gunicorn loads it, reported, nothing started."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Dict, List, Optional

import pytest

from tests.docs_blocks import docs_block
from tests.integration.gunicorn_proc import REPO


def clean_env(**extra: str) -> Dict[str, str]:
    """The environment without anything that changes what the shipped config does."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("FORKLOG_", "GUNICORN_")) and k not in ("BIND", "WEB_CONCURRENCY")
    }
    env.update(extra)
    return env


def run_check(
    *args: str, cwd: Path, env: Optional[Dict[str, str]] = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "forklog", "check", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env=clean_env() if env is None else env,
    )


def test_the_docs_show_what_check_prints_for_the_shipped_config() -> None:
    """The check output on the Configuration page is exactly what the command prints."""
    command, shown = docs_block("check-output").text.split("\n", 1)
    assert command == "$ python -m forklog check gunicorn_conf.py app:app"
    result = run_check("gunicorn_conf.py", "app:app", cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == shown, (
        "docs/configuration.md's check output is stale: paste what `python -m forklog check gunicorn_conf.py "
        "app:app` prints in the repository with no FORKLOG_* variable set"
    )
    assert result.stderr == ""


def test_shipped_config_with_variables_creates_nothing(tmp_path: Path) -> None:
    """FORKLOG_* values show up in the report, and the check makes no directory, file, thread or fork."""
    target = tmp_path / "new" / "app.log"
    env = clean_env(FORKLOG_FILE=str(target), FORKLOG_QUEUE_SIZE="123", FORKLOG_KEEP_LEVEL="warning")
    code = textwrap.dedent(
        f"""
        import os, sys, threading
        forks = []
        os.register_at_fork(before=lambda: forks.append(1))
        import forklog.gunicorn
        from forklog.check import check
        status = check({str(REPO / "gunicorn_conf.py")!r}, "app:app")
        assert not forks, "the check forked"
        assert threading.active_count() == 1, threading.enumerate()
        assert forklog.gunicorn.hub() is None, "the check built a hub"
        sys.exit(status)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "hub: queue_size=123 keep_level=WARNING keep_wait=0.1" in result.stdout
    assert f"  file     RotatingFileSink  DEBUG  {target} (rotates at" in result.stdout
    assert not (tmp_path / "new").exists(), "the check created the log directory"


CONFIG = """
import logging

import forklog.gunicorn
from forklog.gunicorn import *  # noqa: F403

errorlog = {errorlog!r}
logconfig_dict = {{
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {{"audit": {{"class": "logging.FileHandler", "filename": {audit!r}, "level": "INFO"}}}},
    "loggers": {{"audit": {{"handlers": ["audit"]}}}},
}}


def post_fork(server, worker):  # calls forklog's
    forklog.gunicorn.post_fork(server, worker)


def worker_exit(server, worker):  # replaces forklog's
    pass
"""

APP = """
import logging

import chatty_lib

logging.getLogger("quiet_lib").addHandler(logging.NullHandler())  # the library norm: not a bypass


def app(environ, start_response):
    start_response("200 OK", [])
    return [b"ok"]
"""

LIBRARY = """
import logging
import sys

_stderr = logging.StreamHandler(sys.stderr)  # a library that prints its own lines: adopted
logging.getLogger("chatty_lib").addHandler(_stderr)
_own = logging.StreamHandler(open({own!r}, "a"))  # its own file object: writes around the hub
logging.getLogger("chatty_lib.own").addHandler(_own)
"""


def test_a_library_handler_bypassing_the_hub_fails_the_check(tmp_path: Path) -> None:
    """Each handler the app attaches is shown with what adoption does; a bypass fails, with its fix."""
    error_log, audit_log = tmp_path / "error.log", tmp_path / "audit.log"
    conf = tmp_path / "my_conf.py"
    conf.write_text(CONFIG.format(errorlog=str(error_log), audit=str(audit_log)))
    (tmp_path / "my_app.py").write_text(APP)
    (tmp_path / "chatty_lib.py").write_text(LIBRARY.format(own=str(tmp_path / "own.log")))
    result = run_check(str(conf), "my_app:app", cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    out = result.stdout
    assert "  post_fork     own (__config__.post_fork), calls forklog's\n" in out
    assert "  worker_exit   own (__config__.worker_exit), does not call forklog's\n" in out
    assert "  on_exit       forklog's\n" in out
    assert (
        "  logconfig_dict handler audit: adopted (the master writes it): logging.FileHandler INFO "
        f"{audit_log} formatter=-\n"
    ) in out
    assert "app my_app:app: handlers it attaches in each worker (adoption):\n" in out
    assert re.search(
        r"^  adopted +chatty_lib +StreamHandler +NOTSET +<stderr> +\(the master writes it\)$", out, re.M
    )
    assert re.search(r"^  bypasses +chatty_lib\.own +StreamHandler +NOTSET +\S+own\.log", out, re.M)
    assert "quiet_lib" not in out
    assert out.endswith(
        "FAIL: 1 handler(s) write around the hub\n"
        "  fix: use logging.FileHandler, RotatingFileHandler, TimedRotatingFileHandler or a StreamHandler "
        "on stdout/stderr (adopted as they are), or give the handler to the hub: "
        "forklog.gunicorn.configure(handlers=...)\n"
    )
    assert not error_log.exists() and not audit_log.exists(), "the check opened a sink's file"


FRAMEWORK_CONF = "from forklog.gunicorn import *  # noqa: F403\n"


def test_frameworks_that_work_pass_the_check(tmp_path: Path) -> None:
    """Django without LOGGING (console, mail_admins), Django's LOGGING with --preload: no false alarm."""
    conf = tmp_path / "conf.py"
    conf.write_text(FRAMEWORK_CONF)
    django = run_check(
        str(conf),
        "tests.apps.djsite.wsgi:application",
        cwd=REPO,
        env=clean_env(DJANGO_SETTINGS_MODULE="tests.apps.djsite.settings_vanilla"),
    )
    assert django.returncode == 0, django.stdout + django.stderr
    assert re.search(r"^  adopted +django +StreamHandler +INFO +<stderr>", django.stdout, re.M)
    assert re.search(
        r"^  stays +django +AdminEmailHandler +ERROR .*runs in each process", django.stdout, re.M
    )
    preload = tmp_path / "preload.py"
    preload.write_text(FRAMEWORK_CONF + "preload_app = True\n")
    production = run_check(
        str(preload),
        "tests.apps.djsite.wsgi:application",
        cwd=REPO,
        env=clean_env(
            DJANGO_SETTINGS_MODULE="tests.apps.djsite.settings", DJANGO_LOG_FILE=str(tmp_path / "d.log")
        ),
    )
    assert production.returncode == 0, production.stdout + production.stderr
    assert re.search(r"^  adopted +root +RotatingFileHandler +INFO", production.stdout, re.M)
    assert production.stdout.endswith("ok\n")


def test_flasks_documented_dictconfig_disabling_gunicorns_loggers_fails_the_check(tmp_path: Path) -> None:
    """Issue 23, item 6: Flask's documented ``dictConfig`` leaves ``disable_existing_loggers`` true, which
    disables gunicorn's loggers in each worker (their lines are lost, under plain gunicorn too): a FAIL
    with the fix, not "accesslog on" and ok. The same config with the flag false passes."""
    conf = tmp_path / "conf.py"
    conf.write_text(FRAMEWORK_CONF + 'accesslog = "-"\n')
    flask = run_check(str(conf), "tests.apps.flask_app:app", cwd=REPO)
    assert flask.returncode == 1, flask.stdout + flask.stderr
    assert re.search(r"^  adopted +root +StreamHandler +NOTSET +<stderr>", flask.stdout, re.M)
    assert (
        "FAIL: the app's logging config disables gunicorn.error and gunicorn.access (dictConfig's "
        "disable_existing_loggers, true unless set)"
    ) in flask.stdout
    assert '  fix: add "disable_existing_loggers": False to the dict the app' in flask.stdout
    fixed = tmp_path / "flask_fixed.py"
    source = (REPO / "tests" / "apps" / "flask_app.py").read_text()
    fixed.write_text(source.replace('"version": 1,', '"version": 1, "disable_existing_loggers": False,'))
    good = run_check(str(conf), "flask_fixed:app", "--chdir", str(tmp_path), cwd=REPO)
    assert good.returncode == 0 and good.stdout.endswith("ok\n"), good.stdout + good.stderr


@pytest.mark.parametrize(
    ("cls", "fails"),
    [
        ("concurrent_log_handler.ConcurrentRotatingFileHandler", True),
        ("logging.handlers.RotatingFileHandler", False),
    ],
)
def test_a_logconfig_dict_handler_writing_around_the_hub_fails_the_check(
    tmp_path: Path, cls: str, fails: bool
) -> None:
    """A ``logconfig_dict`` is read, not built: its handlers are judged by their class, as adoption will."""
    conf = tmp_path / "conf.py"
    handler = {"class": cls, "filename": str(tmp_path / "app.log")}
    dictionary = {"version": 1, "handlers": {"file": handler}, "root": {"handlers": ["file"]}, "loggers": {}}
    conf.write_text(FRAMEWORK_CONF + f"logconfig_dict = {dictionary!r}\n")
    result = run_check(str(conf), cwd=REPO)
    verdict = "bypasses (writes a file by means of its own)" if fails else "adopted (the master writes it)"
    assert f"  logconfig_dict handler file: {verdict}: {cls}" in result.stdout, result.stdout
    assert result.returncode == (1 if fails else 0), result.stdout
    assert ("FAIL: 1 handler(s) write around the hub" in result.stdout) is fails


def test_a_config_without_forklog_fails_the_check(tmp_path: Path) -> None:
    """A plain gunicorn config has none of forklog's hooks: reported, exit 1."""
    conf = tmp_path / "plain_conf.py"
    conf.write_text("workers = 2\nloglevel = 'debug'\n")
    result = run_check(str(conf), cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "  logger_class  not forklog's: gunicorn.glogging.Logger\n" in result.stdout
    assert "  post_fork     gunicorn's default: forklog's is not installed\n" in result.stdout
    assert "gunicorn: loglevel debug, errorlog -, accesslog off (unset, as in gunicorn)\n" in result.stdout
    assert result.stdout.endswith(
        "FAIL: the config installs none of forklog's hooks: nothing goes through a hub\n"
        f"  fix: add `from forklog.gunicorn import *` to {conf}\n"
    )


def test_bad_settings_or_a_missing_app_fail_the_check(tmp_path: Path) -> None:
    """A bad variable, or an app that does not import, exits 1 saying why."""
    result = run_check("gunicorn_conf.py", cwd=REPO, env=clean_env(FORKLOG_LEVEL="LOUD"))
    assert result.returncode == 1
    assert result.stdout.splitlines()[:3] == [
        "config: gunicorn_conf.py",
        "FAIL: bad settings in the environment (gunicorn would exit with 1 at start):",
        "  FORKLOG_LEVEL='LOUD': expected a level name (CRITICAL, ERROR, WARNING, INFO, DEBUG, NOTSET) "
        "or a number >= 0",
    ]
    result = run_check("gunicorn_conf.py", "no_such_module:app", cwd=REPO)
    assert result.returncode == 1
    assert "FAIL: app no_such_module:app does not import: ModuleNotFoundError" in result.stdout
    assert "no handler bypasses" not in result.stdout


def test_check_says_whether_the_workers_make_the_lines() -> None:
    """With files and the console the workers make the lines; with a syslog sink, the fields too."""
    shipped = run_check("gunicorn_conf.py", "app:app", cwd=REPO)
    assert "workers make the lines: yes, 2 per record\n" in shipped.stdout
    with_syslog = run_check(
        "gunicorn_conf.py", "app:app", cwd=REPO, env=clean_env(FORKLOG_SYSLOG="tcp://127.0.0.1:9")
    )
    assert with_syslog.returncode == 0, with_syslog.stdout + with_syslog.stderr
    assert "workers make the lines: yes, 2 per record, and the fields while syslog take(s) records\n" in (
        with_syslog.stdout
    )
    # Issue 23, item 5: where the syslog sink sends, not "-".
    assert re.search(r"^  syslog +SyslogSink +INFO +tcp://127\.0\.0\.1:9$", with_syslog.stdout, re.M)


@pytest.mark.parametrize(
    ("flags", "fails"),
    [(["-w", "4"], True), (["-w", "4", "--preload"], False), (["-w", "1"], False)],
)
def test_check_takes_gunicorns_flags_and_fails_files_several_workers_write(
    tmp_path: Path, flags: List[str], fails: bool
) -> None:
    """Issue 23, item 2: ``--user`` on gunicorn's command line (as systemd units give it): the app's file
    handlers stay in the workers, and with several workers each writes and rotates the file: a FAIL,
    with the fix. With ``--preload`` the master adopts them; with one worker, one process writes."""
    env = clean_env(
        DJANGO_SETTINGS_MODULE="tests.apps.djsite.settings", DJANGO_LOG_FILE=str(tmp_path / "d.log")
    )
    args = ["-c", "gunicorn_conf.py", "--user", "nobody", "--group", "nogroup", *flags]
    result = run_check(*args, "tests.apps.djsite.wsgi:application", cwd=REPO, env=env)
    out = result.stdout
    assert result.returncode == (1 if fails else 0), out + result.stderr
    if "--preload" in flags:
        assert re.search(r"^  adopted +root +RotatingFileHandler .*the master writes it", out, re.M), out
    else:
        assert re.search(r"^  stays +root +RotatingFileHandler .*workers run as another user", out, re.M), out
    assert re.search(r"^  adopted +root +StreamHandler +WARNING +<stderr>", out, re.M), out
    if fails:
        assert (
            f"FAIL: 1 file handler(s) stay in the workers: 4 workers running as nobody each write "
            f"{tmp_path / 'd.log'} themselves, and rotate it if the handler rotates"
        ) in out, out
        assert "  fix: add --preload (or preload_app = True)" in out
    else:
        assert "FAIL" not in out and out.endswith("ok\n"), out


def test_check_takes_the_config_from_gunicorns_flags_as_gunicorn_does(tmp_path: Path) -> None:
    """``-c`` or the short form; the command line over the file; a bad flag value is a clear FAIL."""
    short = run_check("gunicorn_conf.py", "app:app", "-w", "3", cwd=REPO)
    flags = run_check("-w", "3", "-c", "gunicorn_conf.py", "app:app", cwd=REPO)
    assert short.returncode == flags.returncode == 0, short.stdout + flags.stdout
    assert short.stdout == flags.stdout
    bad = run_check("-c", "gunicorn_conf.py", "--workers", "many", cwd=REPO)
    assert bad.returncode != 0 and "many" in bad.stdout + bad.stderr
    (tmp_path / "gunicorn.conf.py").write_text("from forklog.gunicorn import *  # noqa: F403\n")
    default = run_check(cwd=tmp_path)
    assert default.returncode == 0 and default.stdout.startswith("config: gunicorn.conf.py\n"), default.stdout


@pytest.mark.parametrize(
    ("shape", "says"),
    [
        ("nothing", "the app's records: the hub's sinks (the app configures no logging of its own)"),
        ("basicconfig", "the app's records: where its own handlers send them, as without forklog"),
        ("cookbook-gzip", "has its own namer/rotator, which only the worker has; the master rotates"),
        (
            "twice-file-first",
            "is configured by two handlers, FileHandler and RotatingFileHandler(maxBytes=20000, "
            "backupCount=20); the master writes it once, as RotatingFileHandler(maxBytes=20000, "
            "backupCount=20)",
        ),
    ],
)
def test_check_says_where_the_apps_records_go(tmp_path: Path, shape: str, says: str) -> None:
    """Issue 22, item 8: the app's own records, and a file named by two handlers, as the hub will do it."""
    env = clean_env(SHAPE=shape, SHAPE_FILE=str(tmp_path / "shape.log"))
    result = run_check("gunicorn_conf.py", "tests.apps.stdlib_shapes_app:app", cwd=REPO, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert says in result.stdout, result.stdout


def test_check_says_a_gunicorn_config_below_forklog_run_uses_its_hub(tmp_path: Path) -> None:
    """Issue 24: below forklog run, check says whether the hub answers, and that gunicorn builds no hub."""
    inside = subprocess.run(
        [
            sys.executable,
            "-m",
            "forklog",
            "run",
            "--",
            sys.executable,
            "-m",
            "forklog",
            "check",
            "gunicorn_conf.py",
        ],
        cwd=REPO,
        env=clean_env(FORKLOG_FILE=str(tmp_path / "hub.log"), FORKLOG_CONSOLE="off"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert inside.returncode == 0, inside.stdout + inside.stderr
    assert re.search(r"^below forklog run: the hub at \S+ answers; every Python process", inside.stdout, re.M)
    assert "gunicorn builds no hub of its own" in inside.stdout
    gone = run_check("gunicorn_conf.py", cwd=REPO, env=clean_env(FORKLOG_HUB=str(tmp_path / "nothing.sock")))
    assert gone.returncode == 1
    assert f"FAIL: FORKLOG_HUB={tmp_path / 'nothing.sock'} names no hub that answers this user" in gone.stdout
