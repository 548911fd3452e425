"""The examples of the README and the docs site run as written (tests/docs_blocks.py names them)."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import List

from tests.docs_blocks import docs_block
from tests.integration.gunicorn_proc import REPO, Gunicorn


def run_block(tmp_path: Path, name: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the Python block ``name`` as a script of its own."""
    script = tmp_path / "example.py"
    script.write_text(docs_block(name).text)
    return subprocess.run(
        [sys.executable, str(script)],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=tmp_path,
    )


def test_pool_example_runs(tmp_path: Path) -> None:
    """Pools: every job's record crosses the hub, from both pools."""
    result = run_block(tmp_path, "pool-example")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["6", "8 records crossed the hub"]
    jobs = [line for line in result.stderr.splitlines() if " job job " in line]
    assert sorted(line.split()[-2] for line in jobs) == ["0", "0", "1", "1", "2", "2", "3", "3"]


def test_existing_config_example_runs(tmp_path: Path) -> None:
    """gunicorn, an existing config: the user's post_fork runs, and forklog's hooks still route every line."""
    conf = tmp_path / "my_gunicorn_conf.py"
    conf.write_text(docs_block("existing-config").text)
    assert command_of("existing-config-run") == ["gunicorn", "-c", "my_gunicorn_conf.py", "app:app"]
    server = Gunicorn(tmp_path, conf=conf).start()
    try:
        assert server.get("/") == 200
        assert server.stop() == 0
    finally:
        server.kill_group()
    messages = [line.split(" - ", 1)[1] for line in server.log_lines()]
    ready = [m for m in messages if m.startswith("worker ") and m.endswith(" ready")]
    assert len(ready) == 2
    assert any(m.startswith("hello from pid") for m in messages)
    assert any("GET / HTTP/1.1" in m for m in messages)


def test_request_context_example_runs(tmp_path: Path) -> None:
    """The bind example prints a JSON line with request_id, then one without."""
    result = run_block(tmp_path, "request-context", timeout=60)
    assert result.returncode == 0, result.stderr
    inside, outside = (json.loads(line) for line in result.stdout.splitlines())
    assert inside["message"] == "card charged" and inside["request_id"] == "r-42"
    assert outside["message"] == "outside the request" and "request_id" not in outside


def test_testing_example_runs(tmp_path: Path) -> None:
    """The forklog.testing example passes as a test of its own under pytest."""
    (tmp_path / "test_example.py").write_text(docs_block("testing-example").text)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_example.py"],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout


def command_of(name: str) -> List[str]:
    """The one command of the shell block ``name``, as words."""
    (line,) = [line for line in docs_block(name).text.splitlines() if line.strip()]
    return shlex.split(line)


def gunicorn_args(name: str, app: str) -> List[str]:
    """The arguments the shell block ``name`` gives gunicorn between its config and ``app``."""
    words = command_of(name)
    assert words[:3] == ["gunicorn", "-c", "gunicorn_conf.py"] and words[-1] == app, words
    return words[3:-1]


def test_django_example_runs(tmp_path: Path) -> None:
    """Django: the page's LOGGING under gunicorn with forklog's import writes django.log."""
    (tmp_path / "readme_settings.py").write_text(
        "from tests.apps.djsite.settings import *  # noqa: F403\n" + docs_block("django-settings").text
    )
    conf = tmp_path / "gunicorn_conf.py"
    conf.write_text(docs_block("django-conf").text)
    server = Gunicorn(
        tmp_path,
        [
            "--chdir",
            str(tmp_path),
            "--pythonpath",
            f"{tmp_path},{REPO}",
            *gunicorn_args("django-run", "mysite.wsgi"),
        ],
        conf=conf,
        app="tests.apps.djsite.wsgi:application",
        env={"DJANGO_SETTINGS_MODULE": "readme_settings"},
    ).start()
    try:
        assert server.get("/log?id=readme") == 200
        assert server.get("/boom?id=readme") == 500
        assert server.stop() == 0
    finally:
        server.kill_group()
    text = (tmp_path / "django.log").read_text()
    assert text.count("order placed id=readme") == 1 and text.count("ValueError: boom-readme") == 1
    assert "stock low id=readme" in server.stderr(), "the console's WARNING, on the master's stderr"


def test_flask_example_runs(tmp_path: Path) -> None:
    """Flask: the documented recipe's app.logger line reaches the master's stderr once."""
    (tmp_path / "myapp.py").write_text(docs_block("flask-app").text)
    args = gunicorn_args("flask-run", "myapp:app")
    server = Gunicorn(tmp_path, ["--chdir", str(tmp_path), *args], app="myapp:app", health="/").start()
    try:
        assert server.get("/") == 200
        assert server.stop() == 0
    finally:
        server.kill_group()
    hellos = [
        line for line in server.stderr().splitlines() if line.endswith("INFO in myapp: hello from Flask")
    ]
    assert len(hellos) == 2  # the readiness request and the test's


def test_fastapi_example_runs(tmp_path: Path) -> None:
    """FastAPI under the Uvicorn worker: the app's record reaches the hub's file, once a request."""
    (tmp_path / "api.py").write_text(docs_block("fastapi-app").text)
    args = gunicorn_args("fastapi-run", "api:app")
    server = Gunicorn(tmp_path, ["--chdir", str(tmp_path), *args], app="api:app", health="/").start()
    try:
        assert server.get("/") == 200
        assert server.stop() == 0
    finally:
        server.kill_group()
    lines = server.log_lines()
    assert sum(line.endswith(" - hello from FastAPI") and " api " in line for line in lines) == 2


def test_structlog_example_runs(tmp_path: Path) -> None:
    """structlog: the recipe's JSON events, rendered in the workers, once each in events.json."""
    (tmp_path / "shop.py").write_text(docs_block("structlog-app").text)
    args = gunicorn_args("structlog-run", "shop:app")
    server = Gunicorn(tmp_path, ["--chdir", str(tmp_path), *args], app="shop:app").start()
    try:
        assert server.get("/paid") == 200
        assert server.stop() == 0
    finally:
        server.kill_group()
    events = [json.loads(line) for line in (tmp_path / "events.json").read_text().splitlines()]
    paid = [e for e in events if e["path"] == "/paid"]
    assert len(paid) == 1 and paid[0]["items"] == ["a", "b"] and paid[0]["logger"] == "shop"
