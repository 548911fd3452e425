"""A dead syslog server must not slow the file down.

    python -m benchmarks.syslog [--records 300000] [--runs 5] [--workers 4]

Forked workers flood a :class:`forklog.Hub` whose file sink is the one that
matters, in three setups measured in the same run, interleaved, median of
``--runs``:

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
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import signal
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import forklog
from benchmarks.throughput import FORMAT, _app_log_call, _worker_loop, in_child

SETUPS = ["file", "file + syslog, refused", "file + syslog, stalled"]
#: The file with a dead syslog server may be this much slower than without.
TOLERANCE = 0.10


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


def _written_everything(hub: forklog.Hub) -> bool:
    """The pipe and the backlog are empty and the file sink has every record taken out."""
    stats = hub.stats()
    return stats.pipe_bytes == 0 and stats.queue_depth == 0 and stats.written["file"] >= stats.enqueued


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


def run_isolated(setup: str, port: Optional[int], workers: int, records: int, tmp: Path) -> Dict[str, Any]:
    """``run_one`` in a forked process: no setup inherits another's threads, sockets or heap."""
    folder = Path(tempfile.mkdtemp(dir=tmp))
    out = folder / "result.json"

    def measure() -> None:
        out.write_text(json.dumps(run_one(setup, port, workers, records, folder)))

    _, status = os.waitpid(in_child(measure), 0)
    if not out.exists():
        raise RuntimeError(f"{setup}: the measurement failed (status {status})")
    result: Dict[str, Any] = json.loads(out.read_text())
    return result


def summarize(runs: Dict[str, List[Dict[str, Any]]]) -> List[Dict[str, Any]]:
    """Medians per setup; the ratios are medians of each round's ratio to ``file`` in that round."""
    results = []
    for mine in runs.values():
        out = dict(mine[0])
        for key in ("delivered", "dropped_at_pipe", "syslog_sent", "syslog_dropped", "syslog_failures"):
            out[key] = statistics.median(r[key] for r in mine)
        for key in ("p99_us", "cpu_us"):
            out[key] = statistics.median(r[key] for r in mine)
        pairs = list(zip(mine, runs["file"]))
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


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    # A dead server's sink first fills its buffer (10,000 records, with their
    # fields): 300,000 records a run measure the steady state after that.
    parser.add_argument("--records", type=int, default=300_000, help="records per run, all workers")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args(argv)
    runs: Dict[str, List[Dict[str, Any]]] = {setup: [] for setup in SETUPS}
    servers = DeadServers()
    try:
        with tempfile.TemporaryDirectory(prefix="forklog-bench-syslog-") as tmp:
            for n in range(args.runs):  # interleaved: a slow moment of the machine hits every setup
                for setup in SETUPS:
                    result = run_isolated(setup, servers.port(setup), args.workers, args.records, Path(tmp))
                    runs[setup].append(result)
                    print(f"  run {n + 1} {setup}: {result['delivered'] / 1000:.1f}k/s", file=sys.stderr)
    finally:
        servers.close()
    results = summarize(runs)
    print(
        f"forklog with a dead syslog server: {args.workers} workers, {args.records} records per run "
        f"(~150 bytes, 1% with a traceback); medians of {args.runs} rounds; "
        f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs"
    )
    print(table(results))
    slow = [r["setup"] for r in results if r["ratio"] < 1 - TOLERANCE]
    if slow:
        print(f"FAILED: the file is more than {TOLERANCE:.0%} slower with {', '.join(slow)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
