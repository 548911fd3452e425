"""Performance as users feel it: gunicorn serving HTTP, each setup's log calls in every request.

    python -m benchmarks.http                          # 3 interleaved rounds of 5 s, both worker classes
    python -m benchmarks.http --quick                  # a smoke check: 1 round of 1 s
    python -m benchmarks.http --classes sync --setups append,forklog --rounds 5
    python -m benchmarks.http --classes uvicorn        # uvicorn --workers 4: append vs forklog run

gunicorn, with 4 workers (``sync``, and ``gthread`` with 4 threads each),
serves benchmarks/http_app.py: every request logs 10 records (8 INFO with
a message of ~120 bytes, 1 DEBUG, 1 WARNING with two ``extra`` fields) and
answers ``ok``. ``wrk --latency`` drives it from 127.0.0.1 for ``--seconds``
per run with ``--connections`` and ``--threads``. Each setup has its own
gunicorn config file, written into a temporary folder, and logs DEBUG and up
with the same line format (forklog's ``FILE_FORMAT``) into one file:

* ``floor``: the log calls run, the app's logger is off (nothing written);
* ``append``: every worker appends to the file itself (``logging.FileHandler``
  made in ``post_fork``), what most deployments do today;
* ``cookbook``: the stdlib recipe, ``multiprocessing.Queue(10_000)`` made by
  the config in the master, a ``QueueListener`` with a ``FileHandler`` in the
  master (``on_starting`` to ``on_exit``), a ``QueueHandler`` in each worker;
  a full queue drops the record (``logging.raiseExceptions`` off, as in
  benchmarks/throughput.py);
* ``clh``: ``concurrent_log_handler.ConcurrentRotatingFileHandler`` in each worker;
* ``forklog``: this repository's gunicorn integration, configured as
  gunicorn_conf.py does it from the ``FORKLOG_*`` variables: the file sink at
  DEBUG, no console sink, no access log (the other setups have none), no
  rotation during a run (as ``append``).

Rounds are interleaved: each round runs every worker class and setup once,
so a slow moment of the machine weighs on all alike; the table has the
medians of the rounds. Printed per worker class and setup:

* requests/s, and p50/p99 latency, as wrk reports them;
* the ratio of requests/s to ``append``'s and to ``floor``'s: the median of
  each round's ratio (the two measured within a minute of each other);
* lines written per answered request: the app's lines in the log file(s),
  counted after gunicorn stopped, divided by the requests wrk completed. 10
  when nothing is lost (a little more: the requests still in flight when
  wrk stops are answered and logged, not counted by wrk); less shows loss;
* lost: records logged and not written, exactly: each worker writes at its
  exit how many requests it served (benchmarks/http_app.py), 10 records
  each, minus the app's lines in the file; a note under the table gives
  each round's loss and forklog's own reports of drops, if any;
* CPU per answered request, in µs, of the workers and of the master (all
  its threads, a listener's included): utime + stime from ``/proc`` of the
  master and of each worker, read after the workers answered their first
  request and again when wrk is done, before gunicorn is stopped;
* errors: non-2xx answers and socket errors (connect, read, write, timeout).

gunicorn binds 127.0.0.1 on a free port, runs in a session of its own, is
ready when every worker has answered ``/ready`` (polled, with a deadline),
and is stopped with SIGTERM and waited for; its process group is killed if
it does not stop. The run fails (exit 1) when a run answered nothing or
answered errors.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import http.client
import importlib.metadata
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import IO, Callable, Dict, List, Optional, Sequence, Set, Tuple

import psutil

from benchmarks.http_app import LOGGER, RECORDS_PER_REQUEST, SERVED_ENV
from forklog.settings import FILE_FORMAT as FORMAT

SETUPS = ["floor", "append", "cookbook", "clh", "forklog"]
CLASSES = ["sync", "gthread", "uvicorn"]  # uvicorn: benchmarks/http_uvicorn.py
WORKERS = 4
#: Threads of each gthread worker (a sync worker has one).
GTHREAD_THREADS = 4
#: The log file's name in each run's folder (a rotating setup's backups start with it too).
LOG_NAME = "app.log"
#: The app's lines, as the common format writes them: ``... [INFO] bench.http 1234 ...``.
APP_LINE = f"] {LOGGER} ".encode()
#: forklog's own reports (drops, losses), in the forklog setup's file.
FORKLOG_LINE = b"] forklog "
APP = "benchmarks.http_app:app"
ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 60.0

# -- the gunicorn config of each setup --------------------------------------------------------------

_HEADER = '''\
"""gunicorn config of python -m benchmarks.http: setup {setup!r}, worker class {worker_class!r}."""

import logging
import logging.handlers

bind = {bind!r}
workers = {workers}
worker_class = {worker_class!r}
threads = {threads}
control_socket_disable = True  # gunicorn 24+: no shared socket path, no extra thread in the master

LOGGER = {logger!r}
FORMAT = {format!r}
PATH = {path!r}

'''

_BODIES = {
    "floor": """
def post_fork(server, worker):
    # The log calls run and return at once: the app's logger is off.
    logging.getLogger(LOGGER).setLevel(logging.CRITICAL + 1)
""",
    "append": """
def post_fork(server, worker):
    handler = logging.FileHandler(PATH)
    handler.setFormatter(logging.Formatter(FORMAT))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
""",
    "cookbook": """
import multiprocessing

queue = multiprocessing.Queue(10_000)
listener = None


def on_starting(server):
    global listener
    handler = logging.FileHandler(PATH)
    handler.setFormatter(logging.Formatter(FORMAT))
    listener = logging.handlers.QueueListener(queue, handler, respect_handler_level=True)
    listener.start()


def post_fork(server, worker):
    logging.raiseExceptions = False  # a full queue prints a traceback per record otherwise
    root = logging.getLogger()
    root.addHandler(logging.handlers.QueueHandler(queue))
    root.setLevel(logging.DEBUG)


def on_exit(server):
    listener.stop()
""",
    "clh": """
from concurrent_log_handler import ConcurrentRotatingFileHandler


def post_fork(server, worker):
    handler = ConcurrentRotatingFileHandler(PATH, maxBytes=1 << 40)
    handler.setFormatter(logging.Formatter(FORMAT))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
""",
    "forklog": """
# As gunicorn_conf.py, with the environment python -m benchmarks.http sets:
# {env}
import forklog.gunicorn
from forklog import Settings
from forklog.gunicorn import *  # noqa: F403 - the hooks and logger_class

settings = Settings.from_env()
forklog.gunicorn.configure(handlers=settings.handlers, access_log=False, **settings.hub_options())
""",
}


def forklog_env(path: Path) -> Dict[str, str]:
    """The ``FORKLOG_*`` variables of the forklog setup: one file, DEBUG and up, no console."""
    return {
        "FORKLOG_FILE": str(path),
        "FORKLOG_LEVEL": "DEBUG",
        "FORKLOG_CONSOLE": "off",
        "FORKLOG_MAX_BYTES": str(1 << 40),  # no rotation during a run, as the plain FileHandler
    }


def write_config(setup: str, worker_class: str, port: int, folder: Path) -> Path:
    """The config file of ``setup``, in ``folder``; its log file is ``folder / LOG_NAME``."""
    path = folder / LOG_NAME
    header = _HEADER.format(
        setup=setup,
        worker_class=worker_class,
        bind=f"127.0.0.1:{port}",
        workers=WORKERS,
        threads=GTHREAD_THREADS if worker_class == "gthread" else 1,
        logger=LOGGER,
        format=FORMAT,
        path=str(path),
    )
    body = _BODIES[setup]
    if setup == "forklog":
        body = body.format(env=" ".join(f"{k}={v}" for k, v in forklog_env(path).items()))
    config = folder / f"gunicorn_{setup}_{worker_class}.py"
    config.write_text(header + body)
    return config


def free_port() -> int:
    """A port of 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- gunicorn ---------------------------------------------------------------------------------------


def cpu_seconds(process: psutil.Process) -> float:
    """utime + stime of ``process`` (all its threads), in seconds."""
    times = process.cpu_times()
    return float(times.user + times.system)


class Gunicorn:
    """One gunicorn master and its workers, in a process group of their own."""

    def __init__(self, config: Path, port: int, env: Dict[str, str], output: IO[bytes]) -> None:
        self.start([sys.executable, "-m", "gunicorn", "-c", str(config), APP], port, env, output)

    def start(self, command: List[str], port: int, env: Dict[str, str], output: IO[bytes]) -> None:
        """Run ``command`` in a session of its own, its output to ``output``."""
        self.port = port
        self.output_file = output
        self.proc = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=output,
            start_new_session=True,
        )
        self.master = psutil.Process(self.proc.pid)

    def output(self, limit: int = 2000) -> str:
        """The end of gunicorn's stdout and stderr, for an error message."""
        self.output_file.flush()
        with open(self.output_file.name, "rb") as f:
            return f.read()[-limit:].decode(errors="replace")

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Poll ``/ready`` until each of the workers has answered (pids seen), at most ``timeout``."""
        deadline = time.monotonic() + timeout
        seen: Set[int] = set()
        while len(seen) < WORKERS:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.proc.returncode}:\n{self.output()}")
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"gunicorn: {len(seen)} of {WORKERS} workers answered within {timeout:.0f} s:\n"
                    f"{self.output()}"
                )
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
            try:
                conn.request("GET", "/ready")
                response = conn.getresponse()
                body = response.read()
                if response.status == 200:
                    seen.add(int(body))
            except (OSError, http.client.HTTPException, ValueError):
                time.sleep(0.02)  # not listening yet
            finally:
                conn.close()

    def cpu(self) -> Tuple[float, Dict[int, float]]:
        """CPU seconds of the master and of each worker (by pid), now."""
        workers = {}
        for child in self.master.children():
            with contextlib.suppress(psutil.NoSuchProcess):  # exited since: a worker replaced
                workers[child.pid] = cpu_seconds(child)
        return cpu_seconds(self.master), workers

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM to the master, which stops its workers; wait for it, else kill the group."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise RuntimeError(
                    f"gunicorn did not stop within {timeout:.0f} s:\n{self.output()}"
                ) from None
        if self.proc.returncode != 0:
            raise RuntimeError(f"gunicorn exited with {self.proc.returncode}:\n{self.output()}")

    def kill(self) -> None:
        """SIGKILL to the whole group, before the master is reaped (its pid names the group till then)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


# -- wrk --------------------------------------------------------------------------------------------

_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
_PERCENTILE = re.compile(r"^\s*(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.MULTILINE)
_COMPLETED = re.compile(r"^\s*(\d+) requests in ", re.MULTILINE)
_RATE = re.compile(r"^Requests/sec:\s+([\d.]+)", re.MULTILINE)
_SOCKET_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_NON_2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")


@dataclasses.dataclass
class Wrk:
    """What ``wrk --latency`` reported."""

    requests: int
    rate: float
    p50_ms: float
    p99_ms: float
    errors: int


def parse_wrk(text: str) -> Wrk:
    """Read wrk's summary: requests completed, requests/s, p50 and p99, non-2xx and socket errors."""
    percentiles = {int(q): float(value) * _MS[unit] for q, value, unit in _PERCENTILE.findall(text)}
    completed, rate = _COMPLETED.search(text), _RATE.search(text)
    if completed is None or rate is None or set(percentiles) != {50, 99}:
        raise ValueError(f"unexpected wrk output:\n{text}")
    errors = sum(int(n) for n in _SOCKET_ERRORS.findall(text)[0]) if "Socket errors" in text else 0
    non_2xx = _NON_2XX.search(text)
    return Wrk(
        requests=int(completed.group(1)),
        rate=float(rate.group(1)),
        p50_ms=percentiles[50],
        p99_ms=percentiles[99],
        errors=errors + (int(non_2xx.group(1)) if non_2xx else 0),
    )


@dataclasses.dataclass(frozen=True)
class Load:
    """How wrk drives gunicorn: for ``seconds``, with ``connections`` over ``threads``."""

    seconds: int
    connections: int
    threads: int


def run_wrk(port: int, load: Load) -> Wrk:
    command = [
        "wrk",
        "--latency",
        f"--threads={load.threads}",
        f"--connections={load.connections}",
        f"--duration={load.seconds}s",
        f"http://127.0.0.1:{port}/",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=load.seconds + 60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited with {done.returncode}:\n{done.stderr}{done.stdout}")
    return parse_wrk(done.stdout)


# -- one run ----------------------------------------------------------------------------------------


@dataclasses.dataclass
class Run:
    """One setup with one worker class, once."""

    worker_class: str
    setup: str
    wrk: Wrk
    lines: int  # the app's lines in the log file(s)
    logged: Optional[int]  # records the app logged: 10 a request the workers served (None: unknown)
    reports: List[str]  # forklog's own lines (drops and losses it reports)
    worker_cpu: float  # seconds, all workers, while wrk ran
    master_cpu: float
    workers_replaced: bool  # a worker exited during the run: its CPU is not all counted

    @property
    def lines_per_request(self) -> float:
        return self.lines / self.wrk.requests if self.wrk.requests else 0.0

    @property
    def lost(self) -> Optional[int]:
        """Records logged and not written; None for the floor or when a worker did not say."""
        if self.setup == "floor" or self.logged is None:
            return None
        return self.logged - self.lines

    @property
    def worker_us(self) -> float:
        return self.worker_cpu / self.wrk.requests * 1e6 if self.wrk.requests else 0.0

    @property
    def master_us(self) -> float:
        return self.master_cpu / self.wrk.requests * 1e6 if self.wrk.requests else 0.0


def read_logs(folder: Path) -> Tuple[int, List[str]]:
    """The app's lines in the log file and its backups, and forklog's own lines (its reports)."""
    lines = 0
    reports = []
    for path in sorted(folder.glob(f"{LOG_NAME}*")):
        with open(path, "rb") as f:
            for line in f:
                if APP_LINE in line:
                    lines += 1
                elif FORKLOG_LINE in line:
                    reports.append(line.decode(errors="replace").rstrip())
    return lines, reports


def read_served(folder: Path, workers: int) -> Optional[int]:
    """Records the app logged: 10 per request each worker says, at its exit, that it served."""
    counts = [int(path.read_text()) for path in folder.glob("served-*")]
    if len(counts) < workers:
        return None  # a worker died without saying (SIGKILLed)
    return RECORDS_PER_REQUEST * sum(counts)


def run_one(setup: str, worker_class: str, load: Load, tmp: Path) -> Run:
    """Start gunicorn with ``setup``'s config, wait for every worker, run wrk, stop, count lines."""
    if worker_class == "uvicorn":
        from benchmarks import http_uvicorn  # noqa: PLC0415 - it builds on this module

        return http_uvicorn.run_one(setup, load, tmp)
    folder = Path(tempfile.mkdtemp(prefix=f"{worker_class}-{setup}-", dir=tmp))
    port = free_port()
    config = write_config(setup, worker_class, port, folder)
    served = folder / "served"
    served.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FORKLOG_", "GUNICORN_"))}
    env[SERVED_ENV] = str(served)
    if setup == "forklog":
        env.update(forklog_env(folder / LOG_NAME))
    with open(folder / "gunicorn.out", "wb") as out:
        server = Gunicorn(config, port, env, out)
        try:
            server.wait_ready()
            master_before, workers_before = server.cpu()
            result = run_wrk(port, load)
            master_after, workers_after = server.cpu()
            server.stop()
        finally:
            server.kill()
    worker_cpu = sum(cpu - workers_before.get(pid, 0.0) for pid, cpu in workers_after.items())
    lines, reports = read_logs(folder)
    return Run(
        worker_class=worker_class,
        setup=setup,
        wrk=result,
        lines=lines,
        logged=read_served(served, len(set(workers_before) | set(workers_after))),
        reports=reports,
        worker_cpu=worker_cpu,
        master_cpu=master_after - master_before,
        workers_replaced=set(workers_after) != set(workers_before),
    )


# -- the table --------------------------------------------------------------------------------------


@dataclasses.dataclass
class Summary:
    """The medians of one setup's rounds, with one worker class."""

    worker_class: str
    setup: str
    rate: float
    x_append: Optional[float]
    x_floor: Optional[float]
    p50_ms: float
    p99_ms: float
    lines_per_request: float
    lost: Optional[float]  # records logged and not written (None: the floor, or unknown)
    worker_us: float
    master_us: float
    errors: int


def _ratio(mine: List[Run], base: Optional[List[Run]]) -> Optional[float]:
    """The median of each round's ratio of requests/s to ``base``'s in the same round."""
    if not base:
        return None
    return statistics.median(r.wrk.rate / b.wrk.rate for r, b in zip(mine, base, strict=False))


def summarize(runs: Dict[Tuple[str, str], List[Run]]) -> List[Summary]:
    median = statistics.median
    out = []
    for (worker_class, setup), mine in runs.items():
        lost = [r.lost for r in mine if r.lost is not None]
        out.append(
            Summary(
                worker_class=worker_class,
                setup=setup,
                rate=median(r.wrk.rate for r in mine),
                x_append=_ratio(mine, runs.get((worker_class, "append"))),
                x_floor=_ratio(mine, runs.get((worker_class, "floor"))),
                p50_ms=median(r.wrk.p50_ms for r in mine),
                p99_ms=median(r.wrk.p99_ms for r in mine),
                lines_per_request=median(r.lines_per_request for r in mine),
                lost=median(lost) if lost else None,
                worker_us=median(r.worker_us for r in mine),
                master_us=median(r.master_us for r in mine),
                errors=sum(r.wrk.errors for r in mine),
            )
        )
    return out


def table(results: Sequence[Summary]) -> str:
    def ratio(value: Optional[float]) -> str:
        return "-" if value is None else f"{value:.2f}"

    lines = [
        f"{'class':<9}{'setup':<10}{'req/s':>8}{'x append':>10}{'x floor':>9}{'p50 ms':>8}{'p99 ms':>8}"
        f"{'lines/req':>11}{'lost':>8}{'worker us/req':>15}{'master us/req':>15}{'errors':>8}"
    ]
    previous = None
    for r in results:
        if previous is not None and r.worker_class != previous:
            lines.append("")
        previous = r.worker_class
        lost = "-" if r.lost is None else f"{r.lost:,.0f}"
        lines.append(
            f"{r.worker_class:<9}{r.setup:<10}{r.rate:>8,.0f}{ratio(r.x_append):>10}{ratio(r.x_floor):>9}"
            f"{r.p50_ms:>8.2f}{r.p99_ms:>8.1f}{r.lines_per_request:>11.2f}{lost:>8}{r.worker_us:>15.0f}"
            f"{r.master_us:>15.0f}{r.errors:>8}"
        )
    return "\n".join(lines)


def notes(results: Sequence[Summary], runs: Dict[Tuple[str, str], List[Run]]) -> List[str]:
    """Per setup: records lost, forklog's reports, errors, and workers replaced during a run."""
    out = []
    for r in results:
        mine = runs[(r.worker_class, r.setup)]
        name = f"{r.worker_class} {r.setup}"
        lossy = [x for x in mine if x.lost]
        if lossy:
            each = ", ".join(
                f"{x.lost:,} of {x.logged:,} ({100 * (x.lost or 0) / (x.logged or 1):.1f}%)" for x in lossy
            )
            out.append(f"{name}: records lost in {len(lossy)} of {len(mine)} rounds: {each}")
        if any(x.lost is None for x in mine) and r.setup != "floor" and r.worker_class != "uvicorn":
            out.append(f"{name}: a worker did not say what it served (killed?): loss unknown")
        reports = [line for x in mine for line in x.reports]
        if reports:
            out.append(f"{name}: forklog reported {len(reports)} times, first: {reports[0]}")
        if r.errors:
            out.append(f"{name}: {r.errors} errors (non-2xx answers, socket errors)")
        if any(x.workers_replaced for x in mine):
            out.append(f"{name}: a worker was replaced during a run (its CPU is not all counted)")
    return out


# -- main -------------------------------------------------------------------------------------------


def _names(choices: Sequence[str]) -> Callable[[str], List[str]]:
    """An argparse type: a comma-separated list of ``choices``, in the order given."""

    def parse(text: str) -> List[str]:
        names = [name.strip() for name in text.split(",") if name.strip()]
        if not names or any(name not in choices for name in names):
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {','.join(choices)}")
        return names

    return parse


def _exit_on_sigterm(signum: int, frame: Optional[types.FrameType]) -> None:
    """SIGTERM as an exception: gunicorn (a session of its own) is killed, the folder removed."""
    raise SystemExit(128 + signum)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.http",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--seconds", type=int, default=5, help="wrk's duration per run (default 5)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians (default 3)")
    parser.add_argument("--connections", type=int, default=16, help="wrk's connections (default 16)")
    parser.add_argument("--threads", type=int, default=2, help="wrk's threads (default 2)")
    parser.add_argument(
        "--classes",
        type=_names(CLASSES),
        default=CLASSES,
        help=f"worker classes (default {','.join(CLASSES)})",
    )
    parser.add_argument(
        "--setups", type=_names(SETUPS), default=SETUPS, help=f"setups (default {','.join(SETUPS)})"
    )
    parser.add_argument("--quick", action="store_true", help="a smoke check: 1 round of 1 s")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.seconds = 1, 1
    if min(args.seconds, args.rounds, args.threads) < 1:
        parser.error("--seconds, --rounds and --threads must be at least 1")
    if args.threads > args.connections:
        parser.error("--threads must not exceed --connections (wrk gives each thread a connection)")
    if shutil.which("wrk") is None:
        print(
            "benchmarks.http needs wrk: run `sudo apt-get install -y wrk` (or `make bench`)", file=sys.stderr
        )
        return 1
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    load = Load(args.seconds, args.connections, args.threads)
    from benchmarks.http_uvicorn import combos  # noqa: PLC0415 - it builds on this module

    runs: Dict[Tuple[str, str], List[Run]] = {pair: [] for pair in combos(args.classes, args.setups)}
    with tempfile.TemporaryDirectory(prefix="forklog-bench-http-") as tmp:
        for n in range(args.rounds):  # interleaved: every class and setup once a round
            for (worker_class, setup), done in runs.items():
                run = run_one(setup, worker_class, load, Path(tmp))
                done.append(run)
                print(
                    f"  round {n + 1} {worker_class} {setup}: {run.wrk.rate:,.0f} req/s, "
                    f"{run.lines_per_request:.2f} lines/req",
                    file=sys.stderr,
                )
    results = summarize(runs)
    print(
        f"forklog HTTP benchmark: gunicorn {importlib.metadata.version('gunicorn')} and uvicorn "
        f"{importlib.metadata.version('uvicorn')}, {WORKERS} workers "
        f"(gthread: {GTHREAD_THREADS} threads each), {RECORDS_PER_REQUEST} records a request; "
        f"wrk -t{args.threads} -c{args.connections} -d{args.seconds}s; "
        f"median of {args.rounds} interleaved rounds; Python {sys.version.split()[0]}, {os.cpu_count()} CPUs"
    )
    print(table(results))
    for note in notes(results, runs):
        print(f"  {note}")
    failed = [f"{r.worker_class} {r.setup}" for r in results if r.errors or r.rate == 0]
    if failed:
        print(f"FAILED: errors or no answers: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
