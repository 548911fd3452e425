"""Issue 23, item 1: forklog installs from its built wheel into a project outside this repository.

``make dist`` builds the sdist and the wheel (``python -m build``); the
wheel goes into a clean venv of its own, with gunicorn from the package
index, and a small app in a directory that is not this repository serves
under a config that is one import line: its records land in
``logs/app.log`` there, and ``python -m forklog check`` passes.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Dict, Iterator

import pytest

from tests.integration.gunicorn_proc import REPO, Gunicorn, free_port
from tests.support import wait_for

APP = """
import logging

log = logging.getLogger("shop")


def app(environ, start_response):
    log.info("order %s served", environ.get("QUERY_STRING", ""))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok\\n"]
"""


def clean_env() -> Dict[str, str]:
    """This process's environment without what points into the repository or its venv."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FORKLOG_", "PYTHON", "VIRTUAL_ENV"))}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if str(REPO) not in p)
    return env


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sdist and the wheel, built as ``make dist`` builds them."""
    out = tmp_path_factory.mktemp("dist")
    built = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(REPO)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    # setuptools' license box (a license table in pyproject.toml) said it three times: not once now.
    assert "Deprecat" not in built.stdout + built.stderr, built.stdout + built.stderr
    return out


@pytest.fixture(scope="module")
def venv(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A clean venv outside the repository with the built wheel and its gunicorn extra."""
    home = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(home)], check=True, timeout=120, env=clean_env())
    (wheel,) = dist.glob("forklog-*.whl")
    installed = subprocess.run(
        [
            str(home / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            f"forklog[gunicorn] @ {wheel.as_uri()}",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
        env=clean_env(),
        cwd=home,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    yield home


def test_the_dist_holds_the_package_its_types_and_license(dist: Path) -> None:
    """The wheel has the package, ``py.typed`` and the license; the sdist has the tests too."""
    (wheel,) = dist.glob("forklog-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "forklog/py.typed" in names and "forklog/gunicorn.py" in names
    assert any(name.endswith("licenses/LICENSE") for name in names), names
    assert not [name for name in names if name.startswith("tests/")]
    (sdist,) = dist.glob("forklog-*.tar.gz")
    assert sdist.stat().st_size > 0


def test_the_wheel_serves_an_app_outside_the_repository(venv: Path, tmp_path: Path) -> None:
    """One import line in the config: the app's records reach ``logs/app.log`` beside it; check says ok."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "shop.py").write_text(APP)
    (project / "gunicorn_conf.py").write_text("from forklog.gunicorn import *  # noqa: F403\n")
    python = str(venv / "bin" / "python")
    env = clean_env()
    where = subprocess.run(
        [python, "-c", "import forklog; print(forklog.__file__)"],
        capture_output=True,
        text=True,
        check=True,
        cwd=project,
        env=env,
    )
    assert where.stdout.startswith(str(venv)), where.stdout
    checked = subprocess.run(
        [python, "-m", "forklog", "check", "gunicorn_conf.py", "shop:app"],
        capture_output=True,
        text=True,
        check=False,
        cwd=project,
        env=env,
        timeout=60,
    )
    assert checked.returncode == 0 and checked.stdout.endswith("ok\n"), checked.stdout + checked.stderr
    server = Gunicorn(project, health="/")
    server.env = env
    server.port = free_port()
    server.argv = [
        python,
        "-m",
        "gunicorn",
        "-c",
        "gunicorn_conf.py",
        "-b",
        f"127.0.0.1:{server.port}",
        "-w",
        "2",
        "shop:app",
    ]
    try:
        server.start()
        for n in range(20):
            assert server.get(f"/?n{n}") == 200
        assert server.stop() == 0
    finally:
        server.kill_group()
    log = project / "logs" / "app.log"
    wait_for(log.exists, 5, "logs/app.log")
    served = [int(m[1]) for m in re.finditer(r" shop\b.* order n(\d+) served$", log.read_text(), re.M)]
    assert sorted(served) == list(range(20)), log.read_text()[-2000:]
