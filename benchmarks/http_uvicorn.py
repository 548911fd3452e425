"""The uvicorn rows of ``python -m benchmarks.http``: ``uvicorn --workers 4`` serving the same app.

uvicorn (``--interface wsgi``, the same benchmarks/http_app.py) spawns 4
workers, each running the ``--log-config`` JSON written here: DEBUG and up,
the common line format, a ``logging.FileHandler`` on the run's file.

* ``append``: each worker's handler appends to the file itself (what
  ``--workers`` does today);
* ``forklog``: the same command and config below ``forklog run``: every
  worker attaches to its hub as it starts, and the hub writes the file.

"master" is every process above the workers: uvicorn's supervisor, and
``forklog run`` (the hub) for ``forklog``; the columns are the gunicorn rows'.
``lost`` stays unknown here: uvicorn's workers end by re-raising the SIGTERM
they were stopped with, so they never say what they served (lines/req shows
a loss instead).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import IO, Dict, List, Tuple

import psutil

from benchmarks import http
from benchmarks.http_app import SERVED_ENV
from forklog.settings import FILE_FORMAT

__all__ = ["SETUPS", "run_one"]

SETUPS = ("append", "forklog")


def log_config(path: Path) -> Dict[str, object]:
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"common": {"format": FILE_FORMAT}},
        "handlers": {"file": {"class": "logging.FileHandler", "filename": str(path), "formatter": "common"}},
        "root": {"level": "DEBUG", "handlers": ["file"]},
        "loggers": {"uvicorn.access": {"level": "WARNING"}},
    }


class Uvicorn(http.Gunicorn):
    """uvicorn's supervisor and its workers (below ``forklog run`` for forklog), in a session of their own."""

    def __init__(self, setup: str, config: Path, port: int, env: Dict[str, str], output: IO[bytes]) -> None:
        self.setup = setup
        command = [
            *(
                sys.executable,
                "-m",
                "uvicorn",
                http.APP,
                "--interface",
                "wsgi",
                "--workers",
                str(http.WORKERS),
            ),
            *("--host", "127.0.0.1", "--port", str(port), "--log-config", str(config), "--no-access-log"),
        ]
        if setup == "forklog":
            command = [sys.executable, "-m", "forklog", "run", "--", *command]
        self.start(command, port, env, output)

    def _supervisor(self) -> psutil.Process:
        """uvicorn's own parent process: the top one, or forklog run's child."""
        if self.setup == "forklog":
            children = self.master.children()
            if children:
                return children[0]
        return self.master

    def cpu(self) -> Tuple[float, Dict[int, float]]:
        supervisor = self._supervisor()
        workers = {}
        for child in supervisor.children():
            with contextlib.suppress(psutil.NoSuchProcess):
                if "resource_tracker" not in " ".join(child.cmdline()):  # multiprocessing's, not a worker
                    workers[child.pid] = http.cpu_seconds(child)
        above = http.cpu_seconds(self.master)
        if supervisor.pid != self.master.pid:
            above += http.cpu_seconds(supervisor)
        return above, workers

    def stop(self, timeout: float = http.STOP_TIMEOUT) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise RuntimeError(f"uvicorn did not stop within {timeout:.0f} s:\n{self.output()}") from None


def run_one(setup: str, load: http.Load, tmp: Path) -> http.Run:
    """Start uvicorn with ``setup``, wait for every worker, run wrk, stop, count lines."""
    folder = Path(tempfile.mkdtemp(prefix=f"uvicorn-{setup}-", dir=tmp))
    port = http.free_port()
    config = folder / "logging.json"
    config.write_text(json.dumps(log_config(folder / http.LOG_NAME)))
    served = folder / "served"
    served.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FORKLOG_", "UVICORN_"))}
    env[SERVED_ENV] = str(served)
    if setup == "forklog":
        env.update({"FORKLOG_FILE": "-", "FORKLOG_CONSOLE": "off"})  # the app's own file is the only one
    with open(folder / "uvicorn.out", "wb") as out:
        server = Uvicorn(setup, config, port, env, out)
        try:
            server.wait_ready()
            master_before, workers_before = server.cpu()
            result = http.run_wrk(port, load)
            master_after, workers_after = server.cpu()
            server.stop()
        finally:
            server.kill()
    worker_cpu = sum(cpu - workers_before.get(pid, 0.0) for pid, cpu in workers_after.items())
    lines, reports = http.read_logs(folder)
    return http.Run(
        worker_class="uvicorn",
        setup=setup,
        wrk=result,
        lines=lines,
        logged=http.read_served(served, len(set(workers_before) | set(workers_after))),
        reports=reports,
        worker_cpu=worker_cpu,
        master_cpu=master_after - master_before,
        workers_replaced=set(workers_after) != set(workers_before),
    )


def combos(classes: List[str], setups: List[str]) -> List[Tuple[str, str]]:
    """(class, setup) pairs to run: uvicorn has the append and forklog setups only."""
    return [(c, s) for c in classes for s in setups if c != "uvicorn" or s in SETUPS]
