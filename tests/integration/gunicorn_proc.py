"""A real gunicorn for the tests, started by pytest-xprocess (the design card's harness).

xprocess starts it in its own process group, waits for gunicorn's "Listening at"
line and then for an answer, and keeps its output in the test's directory. The
layer here has what xprocess lacks: a free port, signals to the master and its
exit status, the whole process group killed afterwards, and the records read back.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Collection, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import py
from xprocess import ProcessStarter, XProcess

from tests.support import wait_for

REPO = Path(__file__).resolve().parents[2]

__all__ = [
    "REPO",
    "Accounting",
    "BackgroundLoad",
    "Gunicorn",
    "free_port",
    "gunicorn_version",
    "run_load",
    "wait_for",
]


def gunicorn_version() -> Tuple[int, ...]:
    from importlib.metadata import version

    return tuple(int(part) for part in version("gunicorn").split(".")[:2] if part.isdigit())


# gunicorn 25.1+ runs a control socket at a shared default path; a second
# gunicorn on the machine takes it over (DESIGN H21). Older ones have none.
CONTROL_SOCKET_OFF = ["--no-control-socket"] if gunicorn_version() >= (25, 1) else []


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Starter(ProcessStarter):  # type: ignore[misc]  # xprocess has no type information
    """How xprocess starts one gunicorn and knows that it serves."""

    args: Sequence[str] = ()
    pattern: Optional[str] = None  # a daemon's output is /dev/null; a config may keep the line off it
    max_read_lines = 10_000  # lines before "Listening at": --log-level debug prints the config first

    def __init__(
        self, control_dir: object, xprocess: XProcess, *, server: Gunicorn, timeout: float, detaches: bool
    ) -> None:
        super().__init__(control_dir, xprocess)
        self.server, self.timeout, self.detaches = server, timeout, detaches
        self.args, self.env, self.popen_kwargs = server.argv, server.env, {"cwd": server.tmp_path}
        if server.listening and not detaches:
            self.pattern = rf"Listening at: http://127\.0\.0\.1:{server.port} "

    def startup_check(self) -> bool:
        """Bound is not serving: a request answered (a worker booted), or the master gone."""
        if self.server.get(self.server.health) == 200:
            return True
        return not self.detaches and not self.server.alive()

    def get_lines(self, log_file: object) -> Iterator[str]:
        """xprocess's reading of the output, cut short when the master exits without the line."""
        for line in super().get_lines(log_file):
            if not line and not self.server.alive():
                return
            yield line


class Gunicorn:
    """``gunicorn -c <conf> app:app`` with forklog, started by a test.

    ``listening=False``: the config under test keeps gunicorn's INFO lines off
    its output, so readiness is the answer alone.
    """

    def __init__(
        self,
        tmp_path: Path,
        args: Sequence[str] = (),
        *,
        env: Optional[Dict[str, str]] = None,
        conf: Path = REPO / "gunicorn_conf.py",
        app: str = "app:app",
        graceful_timeout: int = 10,
        health: str = "/health",
        listening: bool = True,
    ) -> None:
        self.tmp_path = tmp_path
        self.health = health  # a path that answers 200 once gunicorn serves
        self.listening = listening
        self.port = free_port()
        self.log_file = tmp_path / "app.log"
        self.graceful_timeout = graceful_timeout
        # No rotation unless a test asks for it: the checks read one file.
        self.env = dict(
            os.environ, FORKLOG_FILE=str(self.log_file), FORKLOG_MAX_BYTES=str(1 << 40), PYTHONUNBUFFERED="1"
        )
        self.env.pop("BIND", None)
        self.env.update(env or {})
        self.argv = [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            str(conf),
            "--chdir",
            str(REPO),
            "-b",
            f"127.0.0.1:{self.port}",
            *CONTROL_SOCKET_OFF,
            "--graceful-timeout",
            str(graceful_timeout),
            *args,
            app,
        ]
        # The test's own xprocess directory: not the session's one in pytest's cache.
        # No pytest config: xprocess would attach handles it closes to every later report.
        self.name = f"gunicorn-{self.port}"
        self.xprocess = XProcess(SimpleNamespace(), py.path.local(tmp_path / "xprocess"))
        # stdout and stderr, in one file as xprocess keeps them
        self.stderr_path = self.stdout_path = Path(self.xprocess.getinfo(self.name).logpath)

    def start(self, timeout: float = 30.0, detaches: bool = False) -> Gunicorn:
        """Start and wait until it serves. ``detaches``: the launcher exits at once (``--daemon``)."""
        starter = functools.partial(_Starter, server=self, timeout=timeout, detaches=detaches)
        try:
            self.xprocess.ensure(self.name, starter, persist_logs=False)
        except (RuntimeError, TimeoutError) as exc:
            raise AssertionError(f"gunicorn did not start: {exc}\n{self.stderr()}") from exc
        assert detaches or self.alive(), f"gunicorn exited at start:\n{self.stderr()}"
        return self

    @property
    def proc(self) -> Optional[subprocess.Popen[bytes]]:
        """The last start's process (xprocess keeps it among its resources)."""
        resources = self.xprocess.resources
        popen: Optional[subprocess.Popen[bytes]] = resources[-1].popen if resources else None
        return popen

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def served_by(self, path: str, timeout: float = 10.0) -> int:
        """GET ``path`` from an app answering with its worker's pid: that pid, or 0 if no answer."""
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
            try:
                conn.request("GET", path)
                response = conn.getresponse()
                body = response.read()
                return int(body) if response.status == 200 and body.strip().isdigit() else 0
            finally:
                conn.close()
        except (OSError, http.client.HTTPException):
            return 0

    def get(self, path: str, timeout: float = 10.0, headers: Optional[Dict[str, str]] = None) -> int:
        """GET ``path``; the HTTP status, or 0 if the request failed."""
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
            try:
                conn.request("GET", path, headers=headers or {})
                response = conn.getresponse()
                response.read()
                return response.status
            finally:
                conn.close()
        except (OSError, http.client.HTTPException):
            return 0  # refused, reset, or cut short by a killed worker

    def wait_logged(self, marker: str, timeout: float = 60.0) -> None:
        """Wait until the hub has caught up: a fresh request's access line is in the file.

        A request's access line is INFO, and dropped while the pipe is full
        (counted, reported), so a new marker request goes out every second.
        """
        deadline = time.monotonic() + timeout
        attempt = 0
        while time.monotonic() < deadline:
            attempt += 1
            assert self.get(f"/health?{marker}-{attempt}") == 200
            needle = f"GET /health?{marker}-{attempt} "

            def written(needle: str = needle) -> bool:
                return needle in self.log_file.read_text(errors="replace")

            try:
                wait_for(written, 1.0, needle)
                return
            except AssertionError:
                continue
        raise AssertionError(f"the hub did not catch up within {timeout}s")

    def signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def wait_exit(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self, timeout: Optional[float] = None) -> int:
        """TERM the master and wait for it: within the graceful timeout plus a margin.

        Not xprocess's terminate(): it TERMs the workers before the master,
        reaps the master itself (its exit status lost) and escalates to KILL.
        """
        if not self.alive():
            assert self.proc is not None
            return int(self.proc.returncode)
        self.signal(signal.SIGTERM)
        return self.wait_exit(timeout if timeout is not None else self.graceful_timeout + 5)

    def kill_group(self) -> None:
        """KILL the master's process group: workers it left behind too, not only its children."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        for resource in self.xprocess.resources:
            resource.release()  # xprocess's handles on the output

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    def log_lines(self) -> List[str]:
        return self.log_file.read_text(encoding="utf-8").splitlines()


class BackgroundLoad:
    """``run_load`` in a thread, so a test can signal gunicorn meanwhile."""

    def __init__(self, server: Gunicorn, paths: Iterable[str], concurrency: int = 4) -> None:
        self.results: Dict[str, int] = {}
        self.done = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(server, list(paths), concurrency))
        self._thread.start()

    def _run(self, server: Gunicorn, paths: List[str], concurrency: int) -> None:
        self.results.update(run_load(server, paths, concurrency))
        self.done.set()

    def join(self, timeout: float = 120) -> Dict[str, int]:
        self._thread.join(timeout)
        assert self.done.is_set(), "the load did not finish"
        return self.results


def run_load(server: Gunicorn, paths: Iterable[str], concurrency: int = 16) -> Dict[str, int]:
    """GET every path concurrently; path -> status (0 when no response came)."""
    paths = list(paths)
    with ThreadPoolExecutor(concurrency) as pool:
        statuses = list(pool.map(server.get, paths))
    return dict(zip(paths, statuses, strict=False))


# -- reading the text file sink -------------------------------------------------------------

TEXT_LINE = re.compile(
    r"^(?P<date>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \[(?P<level>[A-Z]+)\] (?P<logger>\S+) "
    r"(?P<pid>\d+) (?P<thread>\S+) - (?P<message>.*)$"
)
CONSOLE_LINE = re.compile(
    r"^(?P<date>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) (?P<level>[A-Z]+) +(?P<logger>\S+) \| (?P<message>.*)$"
)
BURST = re.compile(r"^burst id=(?P<id>\S+) i=(?P<i>\d+)/(?P<n>\d+) seq=(?P<seq>\d+)$")
BIG = re.compile(r"^burst-big id=(?P<id>\S+) seq=(?P<seq>\d+) payload=(?P<payload>x*) end$")
DROPPED = re.compile(r"^forklog: dropped \d+ records while the queue was full \((?P<levels>[^)]*)\)$")
#: The master's loss report: why is "killed", "exited" or "still running when the hub stopped".
LOST = re.compile(r"^forklog: lost (?P<count>\d+) records from pid (?P<pid>\d+) \((?P<why>[^)]*)\)$")
#: The level of burst record i (app.py): DEBUG, INFO, WARNING in turn.
BURST_LEVELS = ("DEBUG", "INFO", "WARNING")


class Accounting:
    """Every burst record of a run, read back from the text file sink."""

    def __init__(self, lines: List[str]) -> None:
        self.records: List[Dict[str, str]] = []
        self.torn: List[str] = []
        for line in lines:
            match = TEXT_LINE.match(line)
            if match is None:
                self.torn.append(line)
            else:
                self.records.append(match.groupdict())
        self.burst: Dict[str, Dict[int, int]] = {}  # id -> i -> times seen
        self.big: Dict[str, List[int]] = {}  # id -> payload lengths seen
        self.seqs: Dict[str, List[int]] = {}  # pid -> seqs in file order
        self.seqs_by_thread: Dict[Tuple[str, str], List[int]] = {}
        for record in self.records:
            message = record["message"]
            burst = BURST.match(message)
            big = BIG.match(message) if burst is None else None
            if burst is not None:
                seen = self.burst.setdefault(burst["id"], {})
                seen[int(burst["i"])] = seen.get(int(burst["i"]), 0) + 1
                seq = int(burst["seq"])
            elif big is not None:
                self.big.setdefault(big["id"], []).append(len(big["payload"]))
                seq = int(big["seq"])
            else:
                continue
            self.seqs.setdefault(record["pid"], []).append(seq)
            self.seqs_by_thread.setdefault((record["pid"], record["thread"]), []).append(seq)

    def lines_of(self, logger: str) -> List[Dict[str, str]]:
        return [r for r in self.records if r["logger"] == logger]

    def dropped(self) -> Dict[str, Dict[str, int]]:
        """The drops the workers reported in the log: pid -> level -> count."""
        out: Dict[str, Dict[str, int]] = {}
        for record in self.lines_of("forklog"):
            match = DROPPED.match(record["message"])
            if match is not None:
                counts = out.setdefault(record["pid"], {})
                for part in match["levels"].split(", "):
                    level, _, count = part.partition(": ")
                    counts[level] = counts.get(level, 0) + int(count)
        return out

    def lost(self) -> Dict[str, Dict[str, int]]:
        """The losses the master reported in the log: pid of the writer -> why -> count."""
        out: Dict[str, Dict[str, int]] = {}
        for record in self.lines_of("forklog"):
            match = LOST.match(record["message"])
            if match is not None:
                whys = out.setdefault(match["pid"], {})
                whys[match["why"]] = whys.get(match["why"], 0) + int(match["count"])
        return out

    def messages_by_pid(self) -> Dict[str, List[str]]:
        """Each process's records but forklog's own reports: pid -> messages, in the file's order."""
        out: Dict[str, List[str]] = {}
        for record in self.records:
            if record["logger"] != "forklog":
                out.setdefault(record["pid"], []).append(record["message"])
        return out

    def check(
        self,
        requests: Dict[str, int],
        n: int,
        big: int,
        drops_allowed: bool = False,
        without_big: Collection[str] = (),
    ) -> None:
        """Every record of every answered request once; no tear, per-process order.

        Each request logs ``n`` numbered records and one of ``big`` bytes,
        except those in ``without_big`` (asked with ``big=0``).

        A functional test runs below the hub's capacity: a drop fails it.
        A test whose subject is the drop accounting (``drops_allowed``) runs
        a load that fills the pipe: each dropped record must then be in a
        drop report of its level, and the other way round.
        """
        assert not self.torn, f"{len(self.torn)} lines are not whole records: {self.torn[:3]!r}"
        answered = [rid for rid, status in requests.items() if status == 200]
        assert answered, "no request was answered"
        dropped = self.dropped()
        assert drops_allowed or not dropped, f"records dropped below capacity: {dropped}"
        missing: Dict[str, int] = {}
        for rid in answered:
            seen = self.burst.get(rid, {})
            for i in range(n):
                if i not in seen:
                    level = BURST_LEVELS[i % 3]
                    missing[level] = missing.get(level, 0) + 1
            bigs = self.big.get(rid, [])
            if rid in without_big:
                assert not bigs, f"request {rid}: big record {bigs}, none asked for"
                continue
            assert bigs in ([big], []), f"request {rid}: big record {bigs}"
            if not bigs:
                missing["INFO"] = missing.get("INFO", 0) + 1
        for rid, seen in self.burst.items():
            assert all(count == 1 for count in seen.values()), f"request {rid} duplicated: {seen}"
        for key, seqs in self.seqs_by_thread.items():
            assert seqs == sorted(seqs), f"{key}: records out of order"
        for pid, seqs in self.seqs.items():
            # Each process numbers its records 0, 1, 2...: a gap is a record that did not arrive.
            assert len(seqs) == len(set(seqs)), f"pid {pid} duplicated records"
            gaps = max(seqs) + 1 - len(seqs)
            assert gaps <= sum(dropped.get(pid, {}).values()), f"pid {pid} lost records without a report"
        access = [r["message"] for r in self.lines_of("gunicorn.access")]
        for rid in answered:
            hits = [m for m in access if f"id={rid} " in m or f"id={rid}&" in m]
            assert len(hits) <= 1, f"request {rid}: {len(hits)} access lines"
            if not hits:
                missing["INFO"] = missing.get("INFO", 0) + 1
        reported: Dict[str, int] = {}
        for counts in dropped.values():
            for level, count in counts.items():
                reported[level] = reported.get(level, 0) + count
        if len(answered) == len(requests):
            assert missing == reported, f"missing records {missing}, reported dropped {reported}"
        else:  # requests cut short may have logged part of their records
            assert all(count <= reported.get(level, 0) for level, count in missing.items()), (
                f"missing records {missing}, reported dropped {reported}"
            )
