"""A dead syslog server must not slow the file down; a live one, how fast it takes records.

    python -m benchmarks.syslog [--records 300000] [--runs 5] [--workers 4]
                                [--live-records 100000] [--live-capacity N]
                                [--skip-dead | --skip-live]

Two tables, each measured in interleaved rounds (a slow moment of the
machine hits every setup alike), medians of ``--runs`` rounds, every
measurement in a forked process of its own.

**A dead server.** Forked workers flood a :class:`forklog.Hub` whose file
sink is the one that matters, in three setups:

* ``file``: the file sink alone;
* ``file + syslog, refused``: plus a TCP :class:`forklog.SyslogSink` whose
  port has nothing listening (every connection is refused);
* ``file + syslog, stalled``: plus one whose server accepts connections and
  never reads, so each send blocks until the sink's timeout.

Printed per setup: records per second delivered to the file (first log
call to the last record written), its ratio to ``file`` alone, records the
workers dropped at the full pipe, and what the syslog sink sent (into the
stalled server's socket buffers), dropped (counted, reported) and retried.
Exits with 1 when a dead server costs the file more than 10%.

**A live server.** A real rsyslogd (``deploy/rsyslog/forklog.conf``, on
free loopback ports) takes ``--live-records`` records a run from the same
workers, through a hub whose only sink is a :class:`forklog.SyslogSink`
(level INFO; its buffer holds a whole run unless ``--live-capacity`` says
otherwise, so the table measures the transport, not a full buffer), over
``tcp://`` and over ``relp://``.
Printed per transport: records per second delivered to rsyslog (first log
call until rsyslog's file has every record the sink delivered), relp's
ratio to tcp's, the master's CPU per record (all its threads: receiver,
listener, the sink's), rsyslogd's CPU per record, the records in rsyslog's
file, and the sink's ``delivered``, ``dropped`` and (RELP) ``resent``, next
to the records the workers dropped at the full pipe and those unaccounted
for (neither in the file nor dropped at the pipe: 0, the most of any round;
``-`` if the sink dropped records, a count that holds the hub's own reports
too). Without rsyslogd
(``/usr/sbin/rsyslogd``, Debian's rsyslog and rsyslog-relp) this table is
skipped with a message; it never changes the exit code.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any, Callable, Dict, List, Optional, Tuple

import forklog
from benchmarks.throughput import FORMAT, _app_log_call, _worker_loop, in_child
from forklog._master.relp import RelpClient

SETUPS = ["file", "file + syslog, refused", "file + syslog, stalled"]
#: The file with a dead syslog server may be this much slower than without.
TOLERANCE = 0.10
#: The live table's transports, each a SyslogSink.from_url() scheme.
TRANSPORTS = ["tcp", "relp"]
RSYSLOGD = "/usr/sbin/rsyslogd"
CONF = Path(__file__).resolve().parent.parent / "deploy" / "rsyslog" / "forklog.conf"


def _stalled_server(sock: socket.socket) -> None:
    """Accept every connection and never read from it (in a child process)."""
    held = []
    while True:
        conn, _ = sock.accept()
        held.append(conn)


class DeadServers:
    """A port that refuses (bound, not listening) and one whose server never reads."""

    def __init__(self) -> None:
        self.refusing = socket.socket()
        self.refusing.bind(("127.0.0.1", 0))  # held, so no one else listens there
        listening = socket.socket()
        listening.bind(("127.0.0.1", 0))
        listening.listen(64)
        self.stalled_port = int(listening.getsockname()[1])
        self.refused_port = int(self.refusing.getsockname()[1])
        self.pid = in_child(_stalled_server, listening)
        listening.close()

    def port(self, setup: str) -> Optional[int]:
        if setup.endswith("refused"):
            return self.refused_port
        if setup.endswith("stalled"):
            return self.stalled_port
        return None

    def close(self) -> None:
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
        self.refusing.close()


def _flood(hub: forklog.Hub, records: int, out: Path) -> None:
    forklog.init_worker(hub.queue, level=logging.INFO)
    _worker_loop(_app_log_call(logging.getLogger("bench")), records, out)
    hub.queue.flush(timeout=5)  # the drop summary, so the hub's count is complete


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # this process: the master, all its threads
    return usage.ru_utime + usage.ru_stime


def _written_everything(hub: forklog.Hub, sink: str = "file") -> bool:
    """The pipe and the backlog are empty and ``sink`` has every record taken out."""
    stats = hub.stats()
    return stats.pipe_bytes == 0 and stats.queue_depth == 0 and stats.written[sink] >= stats.enqueued


def run_one(setup: str, port: Optional[int], workers: int, records: int, tmp: Path) -> Dict[str, Any]:
    """One measurement, in the calling process: a fresh hub, file and workers."""
    path = tmp / "app.log"
    file_sink = forklog.RotatingFileSink(str(path), maxBytes=1 << 40, backupCount=1)
    file_sink.setFormatter(forklog.TextFormatter(FORMAT))
    sinks: List[Tuple[str, logging.Handler]] = [("file", file_sink)]
    syslog = None
    if port is not None:
        syslog = forklog.SyslogSink(("127.0.0.1", port), app_name="bench", close_timeout=0.5)
        sinks.append(("syslog", syslog))
    hub = forklog.Hub(sinks).start()
    outs = [tmp / f"worker-{k}.json" for k in range(workers)]
    started = time.perf_counter()
    cpu_started = _cpu_seconds()
    pids = [in_child(_flood, hub, records // workers, out) for out in outs]
    for pid in pids:
        os.waitpid(pid, 0)
        hub.process_exited(pid)
    # The end: everything read and written, twice in a row 2 ms apart (a
    # chunk may sit between the receiver's read and the backlog for a moment).
    deadline = time.monotonic() + 120
    while True:
        if _written_everything(hub):
            time.sleep(0.002)
            if _written_everything(hub):
                break
        if time.monotonic() > deadline:
            raise RuntimeError("benchmarks.syslog: the hub did not write everything within 120 s")
        time.sleep(0.001)
    elapsed = time.perf_counter() - started
    cpu = _cpu_seconds() - cpu_started
    stats = hub.stop(timeout=30)
    assert stats is not None
    with open(path, "rb") as f:
        written = sum(1 for line in f if b"] bench " in line[:60])
    return {
        "setup": setup,
        "delivered": written / elapsed,
        "emitted": workers * (records // workers),
        "written": written,
        "dropped_at_pipe": stats.dropped,
        "syslog_sent": syslog.delivered if syslog else 0,
        "syslog_dropped": stats.dropped_by_sink.get("syslog", 0),
        "syslog_failures": syslog.failures if syslog else 0,
        "p99_us": max(json.loads(out.read_text())["p99"] for out in outs),
        # All the master's threads (receiver, listener, the syslog sink's), per
        # record written: unlike records/s, other load on the machine hardly moves it.
        "cpu_us": cpu / max(1, written) * 1e6,
    }


def _isolated(label: str, measure: Callable[[Path], Dict[str, Any]], tmp: Path) -> Dict[str, Any]:
    """``measure(folder)`` in a forked process: no setup inherits another's threads, sockets or heap."""
    folder = Path(tempfile.mkdtemp(dir=tmp))
    out = folder / "result.json"

    def child() -> None:
        try:
            out.write_text(json.dumps(measure(folder)))
        except Exception as exc:
            out.write_text(json.dumps({"error": repr(exc)}))
            raise

    _, status = os.waitpid(in_child(child), 0)
    if not out.exists():
        raise RuntimeError(f"{label}: the measurement failed (status {status})")
    result: Dict[str, Any] = json.loads(out.read_text())
    if "error" in result:
        raise RuntimeError(f"{label}: the measurement failed: {result['error']}")
    return result


def run_isolated(setup: str, port: Optional[int], workers: int, records: int, tmp: Path) -> Dict[str, Any]:
    """``run_one`` in a forked process: no setup inherits another's threads, sockets or heap."""
    return _isolated(setup, lambda folder: run_one(setup, port, workers, records, folder), tmp)


def summarize(runs: Dict[str, List[Dict[str, Any]]]) -> List[Dict[str, Any]]:
    """Medians per setup; the ratios are medians of each round's ratio to ``file`` in that round."""
    results = []
    for mine in runs.values():
        out = dict(mine[0])
        for key in ("delivered", "dropped_at_pipe", "syslog_sent", "syslog_dropped", "syslog_failures"):
            out[key] = statistics.median(r[key] for r in mine)
        for key in ("p99_us", "cpu_us"):
            out[key] = statistics.median(r[key] for r in mine)
        pairs = list(zip(mine, runs["file"], strict=False))
        out["ratio"] = statistics.median(r["delivered"] / base["delivered"] for r, base in pairs)
        out["cpu_ratio"] = statistics.median(r["cpu_us"] / base["cpu_us"] for r, base in pairs)
        results.append(out)
    return results


def table(results: List[Dict[str, Any]]) -> str:
    lines = [
        f"{'setup':<26}{'file/s':>9}{'x alone':>9}{'CPU us/rec':>12}{'x alone':>9}{'dropped at pipe':>17}"
        f"{'syslog sent':>13}{'syslog dropped':>16}{'retries':>9}{'p99 us':>8}"
    ]
    for r in results:
        lines.append(
            f"{r['setup']:<26}{r['delivered'] / 1000:>8.1f}k{r['ratio']:>9.2f}{r['cpu_us']:>12.1f}"
            f"{r['cpu_ratio']:>9.2f}{r['dropped_at_pipe']:>17,.0f}{r['syslog_sent']:>13,.0f}"
            f"{r['syslog_dropped']:>16,.0f}{r['syslog_failures']:>9.0f}{r['p99_us']:>8.0f}"
        )
    return "\n".join(lines)


# -- a live rsyslogd -------------------------------------------------------------


def _free_port(udp_too: bool) -> int:
    """A loopback TCP port that is free now (and for UDP too, if ``udp_too``)."""
    for _ in range(50):
        with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            tcp.bind(("127.0.0.1", 0))
            port = int(tcp.getsockname()[1])
            if udp_too:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise RuntimeError("benchmarks.syslog: no loopback port free for both TCP and UDP")


def rsyslogd_path() -> Optional[str]:
    """The rsyslogd to run, or None if there is none."""
    for path in (RSYSLOGD, shutil.which("rsyslogd")):
        if path and os.access(path, os.X_OK):
            return path
    return None


class LiveServer:
    """``rsyslogd -n -f deploy/rsyslog/forklog.conf`` on free loopback ports, in its own session."""

    def __init__(self, rsyslogd: str, tmp: Path) -> None:
        self.rsyslogd = rsyslogd
        self.port = _free_port(udp_too=True)  # the config listens on it for TCP and UDP
        self.relp_port = _free_port(udp_too=False)
        (tmp / "work").mkdir()
        self.out = tmp / "fleet.log"
        self.pidfile = tmp / "rsyslogd.pid"
        self.stderr_path = tmp / "rsyslogd.stderr"
        self.env = dict(
            os.environ,
            RSYSLOG_FORKLOG_ADDRESS="127.0.0.1",
            RSYSLOG_FORKLOG_PORT=str(self.port),
            RSYSLOG_FORKLOG_RELP_PORT=str(self.relp_port),
            RSYSLOG_FORKLOG_WORKDIR=str(tmp / "work"),
            RSYSLOG_FORKLOG_FILE=str(self.out),
        )
        self.proc: Optional[subprocess.Popen[bytes]] = None

    def version(self) -> str:
        try:
            shown = subprocess.run([self.rsyslogd, "-v"], capture_output=True, timeout=10, check=False)
        except (OSError, subprocess.SubprocessError):
            return "?"
        words = shown.stdout.decode(errors="replace").split()
        return words[1] if len(words) > 1 else "?"

    def start(self, timeout: float = 20.0) -> None:
        """Start rsyslogd; return once it takes TCP connections and RELP sessions."""
        with open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen(
                [self.rsyslogd, "-n", "-f", str(CONF), "-i", str(self.pidfile)],
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
                env=self.env,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while not self._accepts():
            if self.proc.poll() is not None:
                raise RuntimeError(f"rsyslogd exited at start with {self.proc.returncode}:\n{self.stderr()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"rsyslogd did not listen within {timeout:.0f} s:\n{self.stderr()}")
            time.sleep(0.02)

    def _accepts(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            # A whole session: imrelp logs an error for a bare connect.
            with socket.create_connection(("127.0.0.1", self.relp_port), timeout=1) as sock:
                session = RelpClient(sock, timeout=5)
                session.open()
                session.close()
        except OSError:
            return False
        return True

    def url(self, transport: str) -> str:
        return f"{transport}://127.0.0.1:{self.relp_port if transport == 'relp' else self.port}"

    def fresh_output(self) -> None:
        """Empty the output file (rsyslog appends: its next line goes at the start)."""
        if self.out.exists():
            os.truncate(self.out, 0)

    def stop(self) -> None:
        """SIGTERM, and wait until it has exited; its group killed if it does not."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            self.kill_group()
            print("benchmarks.syslog: rsyslogd ignored SIGTERM for 20 s: killed", file=sys.stderr)
            return
        if proc.returncode != 0:
            print(
                f"benchmarks.syslog: rsyslogd exited with {proc.returncode}:\n{self.stderr()}",
                file=sys.stderr,
            )

    def kill_group(self) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""


def _process_cpu_seconds(pid: int) -> float:
    """User and system CPU of another process (rsyslogd, all its threads), from /proc."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rpartition(b")")[2].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class OutputLines:
    """Counts, as rsyslog writes them, the lines of its file that carry one APP-NAME."""

    def __init__(self, path: Path, app: str) -> None:
        self.path = path
        self.marker = b" %s " % app.encode()  # "<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID ..."
        self.count = 0
        self._file: Optional[IO[bytes]] = None
        self._rest = b""

    def poll(self) -> int:
        if self._file is None:
            try:
                self._file = open(self.path, "rb")  # noqa: SIM115 - kept open while polled
            except FileNotFoundError:
                return 0  # rsyslog creates it on its first line
        while True:
            data = self._file.read(1 << 20)
            if not data:
                return self.count
            data = self._rest + data
            end = data.rfind(b"\n") + 1  # whole lines only: the rest waits for its end
            self.count += data.count(self.marker, 0, end)
            self._rest = data[end:]

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def run_live_one(
    transport: str, server: LiveServer, *, app: str, workers: int, records: int, capacity: int, tmp: Path
) -> Dict[str, Any]:
    """One measurement, in the calling process: a fresh hub whose only sink is a SyslogSink to ``server``."""
    assert server.proc is not None
    rsyslogd_pid = server.proc.pid
    sink = forklog.SyslogSink.from_url(
        server.url(transport), app_name=app, level=logging.INFO, capacity=capacity
    )
    hub = forklog.Hub([("syslog", sink)]).start()
    lines = OutputLines(server.out, app)
    outs = [tmp / f"worker-{k}.json" for k in range(workers)]
    started = time.perf_counter()
    cpu_started = _cpu_seconds()
    server_cpu_started = _process_cpu_seconds(rsyslogd_pid)
    pids = [in_child(_flood, hub, records // workers, out) for out in outs]
    for pid in pids:
        os.waitpid(pid, 0)
        hub.process_exited(pid)

    def sent_everything() -> bool:
        # Read before sink.delivered: once it holds, delivered is final.
        return _written_everything(hub, "syslog") and sink.pending == 0

    # The end: the hub and the sink have nothing left (twice in a row, 2 ms
    # apart) and rsyslog's file has every record the sink delivered.
    wait = 60 + records / 1000
    deadline = time.monotonic() + wait
    while True:
        if sent_everything():
            time.sleep(0.002)
            if sent_everything() and lines.poll() >= sink.delivered:
                break
        else:
            lines.poll()  # as rsyslog writes: not all of it at the end
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"benchmarks.syslog: {transport}: rsyslog's file has {lines.count} records of the "
                f"{sink.delivered} the sink delivered ({sink.pending} pending) after {wait:.0f} s"
            )
        time.sleep(0.001)
    elapsed = time.perf_counter() - started
    cpu = _cpu_seconds() - cpu_started
    server_cpu = _process_cpu_seconds(rsyslogd_pid) - server_cpu_started
    lines.close()
    stats = hub.stop(timeout=30)
    assert stats is not None
    app_field = app.encode()
    with open(server.out, "rb") as f:  # this run's app records: "<PRI>1 TS HOST APP PROCID MSGID ..."
        in_rsyslog = sum(1 for line in f if line.split(b" ", 6)[3:6:2] == [app_field, b"bench"])
    return {
        "transport": transport,
        "delivered": in_rsyslog / elapsed,
        "emitted": workers * (records // workers),
        "in_rsyslog": in_rsyslog,
        "dropped_at_pipe": stats.dropped,
        "sink_delivered": sink.delivered,
        "sink_dropped": sink.dropped,
        "sink_resent": sink.resent,
        "sink_failures": sink.failures,
        # Neither in rsyslog's file nor counted as dropped: should be 0. None if
        # the sink dropped records: its count holds the hub's own reports too.
        "unaccounted": None if sink.dropped else workers * (records // workers) - in_rsyslog - stats.dropped,
        "p99_us": max(json.loads(out.read_text())["p99"] for out in outs),
        "cpu_us": cpu / max(1, in_rsyslog) * 1e6,
        "server_cpu_us": server_cpu / max(1, in_rsyslog) * 1e6,
    }


def summarize_live(runs: Dict[str, List[Dict[str, Any]]]) -> List[Dict[str, Any]]:
    """Medians per transport; the ratio is the median of each round's ratio to ``tcp`` in that round."""
    results = []
    for mine in runs.values():
        out = dict(mine[0])
        for key in mine[0]:
            if key not in ("transport", "emitted", "unaccounted"):
                out[key] = statistics.median(r[key] for r in mine)
        counted = [r["unaccounted"] for r in mine]
        out["unaccounted"] = None if None in counted else max(counted)
        out["ratio"] = statistics.median(
            r["delivered"] / base["delivered"] for r, base in zip(mine, runs["tcp"], strict=False)
        )
        results.append(out)
    return results


def live_table(results: List[Dict[str, Any]]) -> str:
    lines = [
        f"{'transport':<11}{'records/s':>10}{'x tcp':>7}{'CPU us/rec':>12}{'rsyslogd us/rec':>17}"
        f"{'in rsyslog':>12}{'delivered':>11}{'dropped':>9}{'resent':>8}{'dropped at pipe':>17}"
        f"{'retries':>9}{'unaccounted':>13}{'p99 us':>8}"
    ]
    for r in results:
        unaccounted = "-" if r["unaccounted"] is None else f"{r['unaccounted']:,}"
        lines.append(
            f"{r['transport']:<11}{r['delivered'] / 1000:>9.1f}k{r['ratio']:>7.2f}{r['cpu_us']:>12.1f}"
            f"{r['server_cpu_us']:>17.1f}{r['in_rsyslog']:>12,.0f}{r['sink_delivered']:>11,.0f}"
            f"{r['sink_dropped']:>9,.0f}{r['sink_resent']:>8,.0f}{r['dropped_at_pipe']:>17,.0f}"
            f"{r['sink_failures']:>9.0f}{unaccounted:>13}{r['p99_us']:>8.0f}"
        )
    return "\n".join(lines)


def live(workers: int, records: int, rounds: int, capacity: Optional[int] = None) -> Optional[str]:
    """The live table (with its heading), or None without rsyslogd (said on stdout)."""
    rsyslogd = rsyslogd_path()
    if rsyslogd is None:
        print(
            f"\nskipped the live table: no rsyslogd ({RSYSLOGD}); install rsyslog and rsyslog-relp "
            "(apt-get install -y --no-install-recommends rsyslog rsyslog-relp)"
        )
        return None
    # By default the sink's buffer holds a whole run (and the hub's own
    # records): the table measures the transport, not a buffer that overflows
    # while the workers flood (--live-capacity 10000 is the sink's default).
    room = capacity or records + 1000
    runs: Dict[str, List[Dict[str, Any]]] = {transport: [] for transport in TRANSPORTS}
    with tempfile.TemporaryDirectory(prefix="forklog-bench-rsyslog-") as tmp:
        server = LiveServer(rsyslogd, Path(tmp))
        version = server.version()
        try:
            try:
                server.start()
            except RuntimeError as exc:
                print(f"\nskipped the live table: {exc}")
                return None
            for n in range(rounds):  # interleaved, as the dead servers' table
                for transport in TRANSPORTS:
                    server.fresh_output()
                    app = f"bench-{transport}-{n + 1}"  # this run's lines in the file, whatever came late

                    def measure(folder: Path, transport: str = transport, app: str = app) -> Dict[str, Any]:
                        return run_live_one(
                            transport,
                            server,
                            app=app,
                            workers=workers,
                            records=records,
                            capacity=room,
                            tmp=folder,
                        )

                    result = _isolated(f"live {transport}", measure, Path(tmp))
                    runs[transport].append(result)
                    print(
                        f"  run {n + 1} live {transport}: {result['delivered'] / 1000:.1f}k/s",
                        file=sys.stderr,
                    )
            server.stop()
        finally:
            server.kill_group()
    return (
        f"forklog to a live rsyslogd {version} (deploy/rsyslog/forklog.conf, loopback): {workers} workers, "
        f"{records} records per run, the only sink a SyslogSink (capacity {room}); "
        f"medians of {rounds} rounds; "
        f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs\n" + live_table(summarize_live(runs))
    )


def dead(workers: int, records: int, rounds: int) -> int:
    """The dead servers' table, printed; 1 if a dead server costs the file more than TOLERANCE."""
    runs: Dict[str, List[Dict[str, Any]]] = {setup: [] for setup in SETUPS}
    servers = DeadServers()
    try:
        with tempfile.TemporaryDirectory(prefix="forklog-bench-syslog-") as tmp:
            for n in range(rounds):  # interleaved: a slow moment of the machine hits every setup
                for setup in SETUPS:
                    result = run_isolated(setup, servers.port(setup), workers, records, Path(tmp))
                    runs[setup].append(result)
                    print(f"  run {n + 1} {setup}: {result['delivered'] / 1000:.1f}k/s", file=sys.stderr)
    finally:
        servers.close()
    results = summarize(runs)
    print(
        f"forklog with a dead syslog server: {workers} workers, {records} records per run "
        f"(~150 bytes, 1% with a traceback); medians of {rounds} rounds; "
        f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs"
    )
    print(table(results))
    slow = [r["setup"] for r in results if r["ratio"] < 1 - TOLERANCE]
    if slow:
        print(f"FAILED: the file is more than {TOLERANCE:.0%} slower with {', '.join(slow)}")
        return 1
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    # A dead server's sink first fills its buffer (10,000 records, with their
    # fields): 300,000 records a run measure the steady state after that.
    parser.add_argument("--records", type=int, default=300_000, help="records per run, all workers")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument(
        "--live-records", type=int, default=100_000, help="records per run with a live rsyslogd, all workers"
    )
    parser.add_argument(
        "--live-capacity",
        type=int,
        default=None,
        help="the live SyslogSink's buffer (default: a whole run, so it drops nothing; the sink's: 10000)",
    )
    skip = parser.add_mutually_exclusive_group()
    skip.add_argument("--skip-dead", action="store_true", help="only the table with a live rsyslogd")
    skip.add_argument("--skip-live", action="store_true", help="only the table with dead servers")
    args = parser.parse_args(argv)
    code = 0
    if not args.skip_dead:
        code = dead(args.workers, args.records, args.runs)
    if not args.skip_live:
        shown = live(args.workers, args.live_records, args.runs, args.live_capacity)
        if shown is not None:
            print(("\n" if not args.skip_dead else "") + shown)
    return code


if __name__ == "__main__":
    sys.exit(main())
