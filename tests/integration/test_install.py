"""Issue 23: the getting-started page, run as written, in clean venvs outside the repository.

Its commands are taken from the page (tests/docs_blocks.py): ``make dist``
in this checkout builds the sdist and the wheel; the wheel goes into a
clean venv with Django, Flask, FastAPI and the Uvicorn worker from the
package index; a Django project with the Django page's ``LOGGING``, the
Flask page's app and the FastAPI page's app each pass ``check`` and serve
under gunicorn with the page's one-line config, and their records land
where their pages say. ``/path/to/forklog`` on the page is this checkout;
gunicorn's port comes from ``GUNICORN_CMD_ARGS``, so the commands stay as
printed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Dict, Iterator, List

import pytest

from tests.docs_blocks import docs_block
from tests.integration.gunicorn_proc import REPO, Gunicorn, free_port
from tests.support import wait_for


def clean_env(venv: Path | None = None) -> Dict[str, str]:
    """This process's environment without what points into the repository or its venv; ``venv`` first."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FORKLOG_", "PYTHON", "VIRTUAL_ENV"))}
    paths = [p for p in env.get("PATH", "").split(os.pathsep) if str(REPO) not in p]
    env["PATH"] = os.pathsep.join(([str(venv / "bin")] if venv else []) + paths)
    return env


def sh(script: str, cwd: Path, env: Dict[str, str], timeout: float = 300) -> str:
    """Run a page's shell block with ``/path/to/forklog`` as this checkout; its output, or fail with it."""
    done = subprocess.run(
        ["bash", "-e", "-c", script.replace("/path/to/forklog", str(REPO))],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )
    assert done.returncode == 0, f"{script}\n{done.stdout}{done.stderr}"
    return done.stdout + done.stderr


def new_venv(home: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", str(home)], check=True, timeout=120, env=clean_env())
    return home


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``make dist``, as the page runs it: the sdist and the wheel in the checkout's dist/."""
    output = sh(docs_block("gs-build").text, tmp_path_factory.mktemp("build"), dict(os.environ))
    # setuptools' license box (a license table in pyproject.toml) said it three times: not once now.
    assert "Deprecat" not in output, output
    (built,) = (REPO / "dist").glob("forklog-*.whl")
    sdist = REPO / "dist" / f"{built.name.split('-py3')[0]}.tar.gz"
    with tarfile.open(sdist) as packed:  # the Deployment page's files come with the source
        names = {name.split("/", 1)[1] for name in packed.getnames() if "/" in name}
    assert {"deploy/rsyslog/forklog.conf", "deploy/systemd/forklog-demo.service", "docs/index.md"} <= names
    return built


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A clean venv with the wheel, as the page installs it, and the frameworks of the pages."""
    home = new_venv(tmp_path_factory.mktemp("venv"))
    install = docs_block("gs-install-wheel").text
    assert wheel.name in install, f"the page installs another file than {wheel.name}"
    env = clean_env(home)
    sh(install, home, env)
    sh("pip install --quiet django flask fastapi uvicorn-worker", home, env)
    yield home


def test_the_readme_quick_start_is_the_pages() -> None:
    """The README's install, config and commands are the getting-started page's, which the tests run."""
    assert docs_block("readme-install").text == docs_block("gs-install-checkout").text
    assert docs_block("readme-conf").text == docs_block("gs-conf").text
    assert docs_block("readme-check").text == docs_block("gs-check").text + docs_block("gs-run").text


def test_the_dist_holds_the_package_its_types_and_license(wheel: Path) -> None:
    """The wheel has the package, ``py.typed`` and the license, and no tests."""
    names = zipfile.ZipFile(wheel).namelist()
    assert "forklog/py.typed" in names and "forklog/gunicorn.py" in names
    assert any(name.endswith("licenses/LICENSE") for name in names), names
    assert not [name for name in names if name.startswith("tests/")]


def test_installing_from_the_checkout(tmp_path: Path) -> None:
    """The page's other way in: pip install from the checkout itself, gunicorn with it."""
    home = new_venv(tmp_path / "venv")
    sh(docs_block("gs-install-checkout").text, tmp_path, clean_env(home))
    out = sh(
        "python -c 'import forklog.gunicorn, gunicorn; print(forklog.__file__)'", tmp_path, clean_env(home)
    )
    assert out.startswith(str(home)), out


def serve(project: Path, venv: Path, command: str, paths: List[str]) -> Gunicorn:
    """Run the page's ``command`` (a gunicorn command line) in ``project``; GET ``paths``; stop it."""
    server = Gunicorn(project, health=paths[0])
    server.port = free_port()
    server.env = clean_env(venv)
    server.env["GUNICORN_CMD_ARGS"] = f"--bind 127.0.0.1:{server.port}"
    server.argv = ["bash", "-c", f"exec {command.strip()}"]
    try:
        server.start()
        for path in paths:
            server.get(path)
        assert server.stop() == 0
    finally:
        server.kill_group()
    return server


def check_and_serve(project: Path, venv: Path, app: str, paths: List[str]) -> Gunicorn:
    """The page's steps 2 to 4 for ``app``: the one-line config, ``check`` (exit 0), gunicorn."""
    (project / "gunicorn_conf.py").write_text(docs_block("gs-conf").text)
    check = docs_block("gs-check").text.replace("mysite.wsgi", app)
    out = sh(check, project, clean_env(venv))
    assert out.rstrip().endswith("ok"), out
    return serve(project, venv, docs_block("gs-run").text.replace("mysite.wsgi", app), paths)


def test_django_project_with_its_logging(venv: Path, tmp_path: Path) -> None:
    """A new Django project, the Django page's LOGGING: django.log has each 404 once, in its format."""
    sh("django-admin startproject mysite .", tmp_path, clean_env(venv))
    settings = tmp_path / "mysite" / "settings.py"
    settings.write_text(settings.read_text() + "\n" + docs_block("django-settings").text)
    missing = [f"/missing-{n}" for n in range(8)]
    check_and_serve(tmp_path, venv, "mysite.wsgi", ["/", *missing])
    text = (tmp_path / "django.log").read_text()
    for path in missing:
        found = re.findall(rf"^\S+ \S+ WARNING django\.request \d+ Not Found: {path}$", text, re.M)
        assert len(found) == 1, (path, text[-2000:])


def test_flask_app(venv: Path, tmp_path: Path) -> None:
    """The Flask page's app: app.logger's line once a request on the master's stderr."""
    (tmp_path / "myapp.py").write_text(docs_block("flask-app").text)
    server = check_and_serve(tmp_path, venv, "myapp:app", ["/"] * 5)
    hellos = [
        line for line in server.stderr().splitlines() if line.endswith("INFO in myapp: hello from Flask")
    ]
    assert len(hellos) == 6  # the readiness request's and five


def test_fastapi_app_under_the_uvicorn_worker(venv: Path, tmp_path: Path) -> None:
    """The FastAPI page's app and command: the app's records in logs/app.log, once a request."""
    (tmp_path / "api.py").write_text(docs_block("fastapi-app").text)
    (tmp_path / "gunicorn_conf.py").write_text(docs_block("gs-conf").text)
    run = docs_block("fastapi-run").text
    assert run.startswith("gunicorn -c gunicorn_conf.py -k uvicorn_worker.UvicornWorker")
    out = sh(run.replace("gunicorn ", "python -m forklog check ", 1), tmp_path, clean_env(venv))
    assert out.rstrip().endswith("ok"), out
    serve(tmp_path, venv, run, ["/"] * 5)
    log = tmp_path / "logs" / "app.log"
    wait_for(log.exists, 5, "logs/app.log")
    hellos = [line for line in log.read_text().splitlines() if line.endswith(" - hello from FastAPI")]
    assert len(hellos) == 6, log.read_text()[-2000:]


def test_forklog_run_from_the_wheel(venv: Path, tmp_path: Path) -> None:
    """The wheel's ``forklog`` command and its hook: a spawned pool child's record reaches the hub."""
    (tmp_path / "job.py").write_text(
        "import logging, multiprocessing\n"
        "def job(n):\n"
        "    logging.getLogger('job').warning('job %d', n)\n"
        "if __name__ == '__main__':\n"
        "    with multiprocessing.get_context('spawn').Pool(2) as pool:\n"
        "        pool.map(job, range(4))\n"
    )
    sh("forklog run -- python job.py", tmp_path, clean_env(venv))
    lines = (tmp_path / "logs" / "app.log").read_text().splitlines()
    assert sorted(line.rsplit(" ", 1)[1] for line in lines if " - job " in line) == ["0", "1", "2", "3"]
