"""SyslogSink against a real rsyslogd running the shipped deploy/rsyslog/forklog.conf.

Every record is counted: it arrives in rsyslog's file exactly once, in its
process's order, or the sink counts it as dropped. rsyslogd runs in the
foreground in its own process group, on a free loopback port, and is
killed at teardown. A missing rsyslogd fails these tests (CI installs it).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence

import pytest

import forklog
from forklog import SyslogSink
from forklog._master.relp import RelpClient
from tests.docs_blocks import docs_block
from tests.integration.gunicorn_proc import REPO, Gunicorn, run_load
from tests.support import wait_for
from tests.unit.test_syslog_format import Message, parse

CONF = REPO / "deploy" / "rsyslog" / "forklog.conf"
APP = "forklog-test"
_RSYSLOGD = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"


def rsyslogd() -> str:
    if not os.access(_RSYSLOGD, os.X_OK):
        pytest.fail(
            "rsyslogd not found: install rsyslog "
            "(apt-get install -y --no-install-recommends rsyslog; .ci/run does it)"
        )
    return _RSYSLOGD


def free_tcp_and_udp_port() -> int:
    """A loopback port free for both TCP and UDP (the shipped config listens on both)."""
    for _ in range(50):
        with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            tcp.bind(("127.0.0.1", 0))
            port = int(tcp.getsockname()[1])
            try:
                udp.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no port free for both TCP and UDP")


def unescape(text: str) -> str:
    """rsyslog writes control characters as #ooo (octal): a newline is #012."""
    return re.sub(r"#([0-3][0-7]{2})", lambda m: chr(int(m.group(1), 8)), text)


class Rsyslog:
    """``rsyslogd -n -f <conf>`` with the RSYSLOG_FORKLOG_* variables the shipped config reads."""

    def __init__(self, tmp_path: Path, conf: Path = CONF) -> None:
        self.conf = conf
        self.port = free_tcp_and_udp_port()
        self.relp_port = free_tcp_and_udp_port()
        self.dir = tmp_path / "rsyslog"
        (self.dir / "work").mkdir(parents=True)
        self.out = self.dir / "out" / "fleet.log"  # rsyslog creates the directory
        self.pidfile = self.dir / "rsyslogd.pid"
        self.stderr_path = self.dir / "rsyslogd.stderr"
        self.env = dict(
            os.environ,
            RSYSLOG_FORKLOG_ADDRESS="127.0.0.1",
            RSYSLOG_FORKLOG_PORT=str(self.port),
            RSYSLOG_FORKLOG_RELP_PORT=str(self.relp_port),
            RSYSLOG_FORKLOG_WORKDIR=str(self.dir / "work"),
            RSYSLOG_FORKLOG_FILE=str(self.out),
        )
        self.proc: Optional[subprocess.Popen[bytes]] = None

    def start(self, ready: Optional[Callable[[], bool]] = None) -> Rsyslog:
        with open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen(
                [rsyslogd(), "-n", "-f", str(self.conf), "-i", str(self.pidfile)],
                stdout=err,
                stderr=err,
                env=self.env,
                start_new_session=True,
            )
        proc = self.proc

        def listening() -> bool:
            if proc.poll() is not None:
                return True
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                with socket.create_connection(("127.0.0.1", self.relp_port), timeout=1) as relp_sock:
                    session = RelpClient(relp_sock, timeout=5)  # a whole session: imrelp logs a bare connect
                    session.open()
                    session.close()
            except OSError:
                return False
            return ready is None or ready()

        wait_for(listening, 20, "rsyslogd to listen")
        assert proc.poll() is None, f"rsyslogd exited at start:\n{self.stderr()}"
        return self

    def stop(self) -> None:
        """TERM, and wait until it has exited (its file is then complete)."""
        proc = self.proc
        assert proc is not None
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
        assert proc.returncode == 0, f"rsyslogd exited with {proc.returncode}:\n{self.stderr()}"

    def kill_group(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    def messages(self) -> List[Message]:
        """Every line of the output file, parsed; a line that is not one whole message fails.

        A last line without its newline is rsyslogd still writing it: read next time.
        """
        if not self.out.exists():
            return []
        text = self.out.read_text()
        return [parse(unescape(line)) for line in text[: text.rfind("\n") + 1].splitlines()]


@pytest.fixture
def rsyslog(tmp_path: Path) -> Iterator[Rsyslog]:
    """A running rsyslogd with the shipped config; killed with its group at teardown."""
    server = Rsyslog(tmp_path)
    try:
        yield server.start()
    finally:
        server.kill_group()


SEQ = re.compile(r"^([\w-]+) k=(\d+) i=(\d+)")


def worker(hub: forklog.Hub, phase: str, k: int, count: int, *, traceback_every: int, pause: float) -> None:
    """In a forked child: log ``count`` numbered records (some with a traceback, extras, bound fields)."""
    forklog.init_worker(hub.queue)
    log = logging.getLogger("app")
    with forklog.bound(worker=k, phase=phase):
        for i in range(count):
            if traceback_every and i % traceback_every == traceback_every - 1:
                try:
                    raise ValueError(f"bad item k={k} i={i}\nsecond line")
                except ValueError:
                    log.exception("%s k=%d i=%d failed", phase, k, i)
            else:
                log.info("%s k=%d i=%d", phase, k, i, extra={"req": f"r-{k}-{i}", "odd": 'a "b" ]c\\'})
            if pause:
                time.sleep(pause)  # the load's pace, not a wait
    hub.queue.flush(timeout=10)


def start_workers(
    hub: forklog.Hub,
    phase: str,
    count: int,
    *,
    workers: int = 2,
    traceback_every: int = 0,
    pause: float = 0.0,
) -> List[int]:
    """Fork ``workers`` children that each log ``count`` records, ``pause`` seconds apart; their pids."""
    pids = []
    for k in range(workers):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                worker(hub, phase, k, count, traceback_every=traceback_every, pause=pause)
                code = 0
            finally:
                os._exit(code)
        pids.append(pid)
    return pids


def join_workers(hub: forklog.Hub, pids: List[int]) -> List[int]:
    """Wait for the children to exit (each cleanly) and tell the hub; their pids."""
    for pid in pids:
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        hub.process_exited(pid)
    return pids


def arrivals(messages: Sequence[Message]) -> Dict[int, List[int]]:
    """The record numbers that reached rsyslog, by the pid in PROCID, in the order written."""
    by_pid: Dict[int, List[int]] = defaultdict(list)
    for m in messages:
        if m.app_name == APP and m.msgid == "app":
            match = SEQ.match(m.msg)
            assert match, m.msg
            by_pid[int(m.procid)].append(int(match.group(3)))
    return by_pid


def syslog_sink(server: Rsyslog, **options: object) -> SyslogSink:
    options.setdefault("max_backoff", 0.5)
    return SyslogSink(("127.0.0.1", server.port), app_name=APP, facility="local0", **options)  # type: ignore[arg-type]


def json_sink(path: Path) -> logging.Handler:
    sink = forklog.RotatingFileSink(str(path))
    sink.setFormatter(forklog.JSONFormatter())
    return sink


def test_shipped_config_every_record_from_forked_workers_arrives_once(
    rsyslog: Rsyslog, tmp_path: Path
) -> None:
    """3 forked workers through a Hub: each record once, in order, traceback whole, extras as SD."""
    count = 300
    sink = syslog_sink(rsyslog)
    hub = forklog.Hub([("file", json_sink(tmp_path / "app.json")), ("syslog", sink)]).start()
    try:
        pids = join_workers(hub, start_workers(hub, "a", count, workers=3, traceback_every=50))
        wait_for(lambda: sum(map(len, arrivals(rsyslog.messages()).values())) >= 3 * count, 30, "rsyslog")
    finally:
        stats = hub.stop(timeout=20)
    rsyslog.stop()
    assert stats is not None
    messages = rsyslog.messages()  # each line parses: no record was split or merged
    got = arrivals(messages)
    assert sorted(got) == sorted(pids) and os.getpid() not in got, "PROCID is not the worker's pid"
    for pid in pids:
        assert got[pid] == list(range(count)), f"pid {pid}: lost, duplicated or reordered"
    ours = [m for m in messages if m.app_name == APP]
    failed = [m for m in ours if "failed" in m.msg]
    assert len(failed) == 3 * (count // 50)
    for m in failed:
        assert m.pri == 16 * 8 + 3  # local0.err
        lines = m.msg.split("\n")
        assert lines[1] == "Traceback (most recent call last):"
        assert lines[-2:] == [lines[-2], "second line"] and lines[-2].startswith("ValueError: bad item")
    plain = next(m for m in ours if m.msg.startswith("a k=1 i=7"))
    params = plain.sd["forklog@32473"]
    assert params == {
        "logger": "app",
        "level": "INFO",
        "thread": "MainThread",
        "req": "r-1-7",
        "odd": 'a "b" ]c\\',
        "worker": "1",
        "phase": "a",
    }
    assert plain.pri == 16 * 8 + 6 and re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", plain.timestamp
    )
    assert stats.dropped_by_sink["syslog"] == 0 and stats.dropped == 0 and stats.lost == 0
    assert stats.written["syslog"] == len(messages)
    lines = (tmp_path / "app.json").read_text().splitlines()
    assert len([line for line in lines if json.loads(line)["logger"] == "app"]) == 3 * count
    assert "error" not in rsyslog.stderr().lower(), rsyslog.stderr()


def fleet_config(port: int) -> str:
    """The Deployment page's fleet config (gunicorn's), sending to ``port`` instead of logs.internal."""
    block = docs_block("fleet-config").text
    assert "relp://logs.internal:2514" in block
    return block.replace("relp://logs.internal:2514", f"relp://127.0.0.1:{port}")


def test_the_fleet_config_under_real_gunicorn(rsyslog: Rsyslog, tmp_path: Path) -> None:
    """gunicorn with the Deployment page's config: rsyslog gets what the file gets, from the workers."""
    conf = tmp_path / "fleet_conf.py"
    conf.write_text(fleet_config(rsyslog.relp_port))
    server = Gunicorn(tmp_path, ["-w", "2"], conf=conf, env={"FORKLOG_FORMAT": "json"})
    try:
        server.start()
        paths = [f"/burst?n=30&big=0&id=s{j}" for j in range(20)] + ["/error"] * 3
        assert set(run_load(server, paths, concurrency=4).values()) == {200}
        assert server.get("/", headers={"X-Request-Id": "r-readme"}) == 200
        assert server.stop() == 0
        rsyslog.stop()
    finally:
        server.kill_group()
    in_file = [json.loads(line) for line in server.log_lines()]
    messages = [m for m in rsyslog.messages() if m.app_name == "shop"]
    # The same records at INFO and up (the sink's level), in the same order per process, in the file
    # and in rsyslog.
    assert len([r for r in in_file if r["logger"] == "app"]) == 20 * 30 + 3 * 1 + 3
    file_app = [(r["pid"], r["message"]) for r in in_file if r["logger"] == "app" and r["level"] != "DEBUG"]
    sent_app = [(int(m.procid), m.msg.split("\n")[0]) for m in messages if m.msgid == "app"]
    # A burst's records are DEBUG, INFO, WARNING in turn; the index page's, DEBUG, INFO and WARNING.
    assert len(file_app) == 20 * 20 + 3 * 1 + 2
    # Over the pids of both sides: a worker whose records all went missing on one side fails too.
    for pid in {pid for pid, _ in file_app} | {pid for pid, _ in sent_app}:
        assert [m for p, m in sent_app if p == pid] == [m for p, m in file_app if p == pid], pid
    assert server.pid not in {pid for pid, _ in sent_app}, "PROCID is the master's, not the worker's"
    errors = [m for m in messages if m.msgid == "app" and m.pri == 16 * 8 + 3]
    assert len(errors) == 3
    for m in errors:
        assert m.msg.split("\n")[1] == "Traceback (most recent call last):"
        assert m.msg.endswith("KeyError: 'missing'") and m.sd["forklog@32473"]["request_id"]
    (hello,) = [m for m in messages if m.msg.startswith("hello from pid")]
    assert hello.sd["forklog@32473"]["request_id"] == "r-readme"
    access = [m.msg for m in messages if m.msgid == "gunicorn.access"]
    assert sorted(access) == sorted(r["message"] for r in in_file if r["logger"] == "gunicorn.access")
    assert len(access) >= 24  # and the readiness probes


def dropped_by_pid(sink: SyslogSink) -> Dict[int, int]:
    out: Dict[int, int] = defaultdict(int)
    for (_level, pid), n in list(sink.drops.items()):
        out[pid] += n
    return out


def test_rsyslog_restarted_mid_stream_what_was_buffered_arrives_the_rest_is_counted(
    rsyslog: Rsyslog, tmp_path: Path
) -> None:
    """rsyslog down: records wait up to capacity and arrive after it returns; arrived + counted == emitted."""
    capacity = 300
    sink = syslog_sink(rsyslog, capacity=capacity)
    path = tmp_path / "app.json"
    hub = forklog.Hub([("file", json_sink(path)), ("syslog", sink)]).start()
    emitted: Dict[int, int] = {}
    try:
        # A: rsyslog up; everything arrives before it is stopped (TCP cannot tell
        # what a server read before it died: the stop comes when nothing is in flight).
        for pid in join_workers(hub, start_workers(hub, "a", 100)):
            emitted[pid] = 100
        wait_for(lambda: sum(map(len, arrivals(rsyslog.messages()).values())) == 200, 30, "phase a")
        rsyslog.stop()
        # B: rsyslog down for seconds while records keep coming (2 x 1000 over
        # about 2 s). The sink finds its connection closed, cannot reconnect,
        # keeps `capacity` records (and the batch it was sending) and drops the rest.
        failures = sink.failures
        b_pids = join_workers(hub, start_workers(hub, "b", 1000, pause=0.002))
        emitted.update(dict.fromkeys(b_pids, 1000))

        def b_settled() -> bool:
            drops = dropped_by_pid(sink)
            return sink.failures >= failures + 3 and sum(drops[p] for p in b_pids) + sink.pending == 2000

        wait_for(b_settled, 30, "phase b to fill the sink's buffer")
        waiting = sink.pending
        assert capacity < waiting <= capacity + sink.batch_size
        # C: new workers log (200 each over about 2 s); rsyslog restarts on the
        # same port in the middle of it.
        c_pids = start_workers(hub, "c", 200, pause=0.01)
        emitted.update(dict.fromkeys(c_pids, 200))
        wait_for(lambda: hub.stats().written["syslog"] > 2200 + 50, 30, "phase c to be under way")
        rsyslog.start()
        join_workers(hub, c_pids)
        wait_for(lambda: sink.pending == 0, 30, "the sink to drain")
        # Seconds down at a backoff of 0.1 s doubling to 0.5 s: a few retries, not one per record.
        assert failures < sink.failures <= 40, sink.failures
    finally:
        stats = hub.stop(timeout=20)
    rsyslog.stop()
    assert stats is not None
    messages = rsyslog.messages()
    got = arrivals(messages)
    drops = dropped_by_pid(sink)
    assert set(got) <= set(emitted), "records from a pid that sent none"
    for pid, count in emitted.items():
        numbers = got.get(pid, [])
        assert numbers == sorted(set(numbers)), f"pid {pid}: duplicated or reordered"
        assert len(numbers) + drops[pid] == count, f"pid {pid}: {len(numbers)} arrived + {drops[pid]} counted"
    arrived_b = sum(len(got.get(p, [])) for p in b_pids)
    assert arrived_b == waiting, "what waited in the buffer is not what arrived"
    assert sum(drops[p] for p in b_pids) == 2000 - waiting > 0
    # Everything handed to the sink (the hub's own reports too) arrived or was counted.
    assert stats.written["syslog"] == len(messages) + stats.dropped_by_sink["syslog"]
    assert stats.dropped_by_sink["syslog"] == sink.dropped > 0
    reports = [json.loads(line) for line in path.read_text().splitlines() if "could not write" in line]
    assert (
        sum(r["forklog_sink_dropped"]["count"] for r in reports if r["logger"] == "forklog") == sink.dropped
    )
    assert all("forklog: sink syslog could not write" in r["message"] for r in reports)
    in_file = [json.loads(line) for line in path.read_text().splitlines()]
    assert len([r for r in in_file if r["logger"] == "app"]) == sum(emitted.values()), "the file lost records"


@pytest.mark.parametrize("transport", ["udp", "unix-dgram", "unix-stream"])
def test_udp_and_unix_sockets_deliver(tmp_path: Path, transport: str) -> None:
    """UDP (the shipped config's imudp), a unix datagram socket (imuxsock) and a unix stream (imptcp)."""
    sockets = Path(tempfile.mkdtemp(prefix="fl-syslog-"))  # short: a socket path has 108 bytes at most
    conf = tmp_path / "with-unix.conf"
    conf.write_text(
        f'include(file="{CONF}")\n'
        'module(load="imuxsock" SysSock.Use="off")\n'
        f'input(type="imuxsock" Socket="{sockets}/dgram.sock" Ruleset="forklog" UseSpecialParser="off"\n'
        '      ParseHostname="on" IgnoreTimestamp="off" RateLimit.Interval="0")\n'
        'module(load="imptcp")\n'
        f'input(type="imptcp" path="{sockets}/stream.sock" unlink="on" ruleset="forklog")\n'
    )
    server = Rsyslog(tmp_path, conf)
    try:
        server.start(ready=lambda: all((sockets / f"{k}.sock").exists() for k in ("dgram", "stream")))
        if transport == "udp":
            sink = SyslogSink.from_url(f"udp://127.0.0.1:{server.port}", app_name=APP)
        else:
            sink = SyslogSink.from_url(f"unix://{sockets}/{transport[5:]}.sock", app_name=APP)
        with forklog.Hub([("syslog", sink)]) as hub:
            pids = join_workers(hub, start_workers(hub, transport, 50, workers=1, traceback_every=10))
            wait_for(lambda: len(arrivals(server.messages()).get(pids[0], [])) >= 50, 30, "the records")
        server.stop()
        assert arrivals(server.messages()) == {pids[0]: list(range(50))}
        failed = [m for m in server.messages() if "failed" in m.msg]
        assert len(failed) == 5 and all("Traceback (most recent call last):\n" in m.msg for m in failed)
        assert sink._stream is (transport == "unix-stream")
        assert "error" not in server.stderr().lower(), server.stderr()
    finally:
        server.kill_group()
        shutil.rmtree(sockets, ignore_errors=True)
