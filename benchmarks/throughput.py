"""Throughput and log-call latency: forklog next to the setups a user would otherwise pick.

    python -m benchmarks                 # the full table (1, 2, 4, 8 workers, 3 runs each)
    python -m benchmarks --quick         # CI: small, one run, fails if forklog loses a record
    python -m benchmarks --stages        # the master's cost per record, stage by stage

Every setup runs in the same process tree and the same run, with forked
workers that each log ``records`` records (about 150 bytes, 1% with a
traceback) as fast as they can into one file:

* ``cookbook``: ``multiprocessing.Queue(10_000)`` + ``QueueListener``;
* ``cookbook-unbounded``: the same with an unbounded queue;
* ``append``: every worker appends to the file itself (``FileHandler``);
* ``loguru``: ``logger.add(path, enqueue=True)``;
* ``clh``: ``concurrent_log_handler.ConcurrentRotatingFileHandler``;
* ``forklog``: a :class:`forklog.Hub` with a rotating file sink;
* ``floor``: the log call with a handler that does nothing.

Printed per setup and worker count: delivered records/s (first emit to the
last record on disk), p50/p99/p99.9 of the log call in the workers, records
lost, peak RSS of the master and of the workers, and the ratio of delivered
throughput to the cookbook's measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import logging
import logging.handlers
import multiprocessing
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import forklog

SETUPS = ["cookbook", "cookbook-unbounded", "append", "loguru", "clh", "forklog", "floor"]
FORMAT = "%(asctime)s [%(levelname)s] %(name)s %(process)d %(threadName)s - %(message)s"
MESSAGE = "request handled path=/api/v1/items/%d user=%s status=%d bytes=%d"


def _maxrss_kib() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def _worker_loop(log_call: Callable[[int], None], records: int, out: Path) -> None:
    """Log ``records`` records as fast as possible; write call latencies and RSS to ``out``."""
    timer = time.perf_counter_ns
    latencies = [0] * records
    for i in range(records):
        started = timer()
        log_call(i)
        latencies[i] = timer() - started
    latencies.sort()

    def pick(q: float) -> float:
        return latencies[min(records - 1, int(q * records))] / 1000

    summary = {"p50": pick(0.5), "p99": pick(0.99), "p999": pick(0.999), "rss_kib": _maxrss_kib()}
    out.write_text(json.dumps(summary))


def _app_log_call(log: logging.Logger) -> Callable[[int], None]:
    def call(i: int) -> None:
        if i % 100 == 99:
            try:
                raise ValueError(f"bad item {i}")
            except ValueError:
                log.exception(MESSAGE, i, "alice", 500, 0)
        else:
            log.info(MESSAGE, i, "alice", 200, 1234)

    return call


class Setup:
    """Master side of one setup; ``child()`` runs in each forked worker."""

    def __init__(self, name: str, path: Path) -> None:
        self.name = name
        self.path = path

    def start(self) -> None:
        if self.name in ("cookbook", "cookbook-unbounded"):
            ctx = multiprocessing.get_context("fork")
            self.queue: Any = ctx.Queue(10_000 if self.name == "cookbook" else 0)
            handler = logging.FileHandler(self.path)
            handler.setFormatter(logging.Formatter(FORMAT))
            self.listener = logging.handlers.QueueListener(self.queue, handler, respect_handler_level=True)
            self.listener.start()
        elif self.name == "forklog":
            sink = forklog.RotatingFileSink(self.path, maxBytes=1 << 40, backupCount=1)
            sink.setFormatter(forklog.TextFormatter(FORMAT))
            self.hub = forklog.Hub([sink]).start()
        elif self.name == "loguru":
            from loguru import logger  # noqa: PLC0415 - an optional peer

            logger.remove()
            line = "{time} [{level}] {name} {process} {thread.name} - {message}"
            self.loguru_id = logger.add(str(self.path), enqueue=True, format=line)

    def child(self, records: int, out: Path) -> None:
        root = logging.getLogger()
        root.handlers.clear()
        root.setLevel(logging.INFO)
        log = logging.getLogger("bench")
        if self.name in ("cookbook", "cookbook-unbounded"):
            logging.raiseExceptions = False  # a full queue prints a traceback per record otherwise
            root.addHandler(logging.handlers.QueueHandler(self.queue))
        elif self.name == "forklog":
            forklog.init_worker(self.hub.queue, level=logging.INFO)
        elif self.name == "append":
            handler = logging.FileHandler(self.path)
            handler.setFormatter(logging.Formatter(FORMAT))
            root.addHandler(handler)
        elif self.name == "clh":
            from concurrent_log_handler import ConcurrentRotatingFileHandler  # noqa: PLC0415

            handler = ConcurrentRotatingFileHandler(str(self.path), maxBytes=1 << 40)
            handler.setFormatter(logging.Formatter(FORMAT))
            root.addHandler(handler)
        elif self.name == "floor":
            root.addHandler(logging.NullHandler())
        if self.name == "loguru":
            from loguru import logger  # noqa: PLC0415 - an optional peer

            def call(i: int) -> None:
                if i % 100 == 99:
                    try:
                        raise ValueError(f"bad item {i}")
                    except ValueError:
                        logger.exception(MESSAGE % (i, "alice", 500, 0))
                else:
                    logger.info(MESSAGE % (i, "alice", 200, 1234))

            _worker_loop(call, records, out)
            logger.complete()
            return
        _worker_loop(_app_log_call(log), records, out)
        if self.name in ("cookbook", "cookbook-unbounded"):
            self.queue.close()
            self.queue.join_thread()

    def stop(self) -> None:
        if self.name in ("cookbook", "cookbook-unbounded"):
            self.listener.stop()
        elif self.name == "forklog":
            self.hub.stop(timeout=120)
        elif self.name == "loguru":
            from loguru import logger  # noqa: PLC0415 - an optional peer

            logger.remove(self.loguru_id)

    def written(self) -> int:
        if self.name == "floor" or not self.path.exists():
            return 0
        with open(self.path, "rb") as f:
            # Records, not traceback lines, nor forklog's own reports (drops, losses).
            return sum(1 for line in f if line[:4].isdigit() and b"] forklog " not in line[:60])


def run_one(name: str, workers: int, records: int, tmp: Path) -> Dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(dir=tmp))  # a fresh file for every run
    path = tmp / f"{name}-{workers}.log"
    setup = Setup(name, path)
    setup.start()
    outs = [tmp / f"{name}-{workers}-{k}.json" for k in range(workers)]
    started = time.perf_counter()
    pids = []
    for k in range(workers):
        pids.append(in_child(setup.child, records, outs[k]))
    for pid in pids:
        os.waitpid(pid, 0)
    setup.stop()
    elapsed = time.perf_counter() - started
    stats = [json.loads(out.read_text()) for out in outs]
    expected = workers * records
    written = expected if name == "floor" else setup.written()
    return {
        "setup": name,
        "workers": workers,
        "delivered": written / elapsed if name != "floor" else 0.0,
        "p50": statistics.median(s["p50"] for s in stats),
        "p99": max(s["p99"] for s in stats),
        "p999": max(s["p999"] for s in stats),
        "lost": expected - written,
        "lost_pct": 100.0 * (expected - written) / expected,
        "rss_master_mib": _maxrss_kib() / 1024,
        "rss_worker_mib": max(s["rss_kib"] for s in stats) / 1024,
    }


def run_isolated(name: str, workers: int, records: int, tmp: Path) -> Dict[str, Any]:
    """Each measurement in its own process, so no setup inherits another's threads or RSS."""
    out = tmp / f"result-{name}-{workers}.json"

    def measure() -> None:
        try:
            out.write_text(json.dumps(run_one(name, workers, records, tmp)))
        except Exception as exc:
            out.write_text(json.dumps({"error": repr(exc)}))
            raise

    os.waitpid(in_child(measure), 0)
    result: Dict[str, Any] = json.loads(out.read_text())
    if "error" in result:
        raise RuntimeError(f"{name} with {workers} workers: {result['error']}")
    return result


class SlowSink(logging.Handler):
    """A sink that takes 1 ms per record, like a disk that crawls.

    It runs on the listener, as a file sink does (``forklog_inline``): the
    stall backs up into the hub's queue and the pipe, and the workers' drop
    policy takes over. (A network sink would get its own buffer and thread;
    ``python -m benchmarks.syslog`` measures that.)
    """

    forklog_inline = True

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        time.sleep(0.001)
        if record.name != "forklog":
            self.count += 1


def in_child(target: Callable[..., None], *args: Any) -> int:
    """Run ``target(*args)`` in a forked child that never returns into the benchmark."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            target(*args)
        except BaseException:  # noqa: BLE001 - report nothing, exit
            code = 1
        finally:
            os._exit(code)
    return pid


def _flood_stalled(hub: forklog.Hub, seconds: float, out: Path) -> None:
    forklog.init_worker(hub.queue, level=logging.INFO)
    call = _app_log_call(logging.getLogger("bench"))
    timer = time.perf_counter_ns
    below_keep: List[int] = []  # INFO calls: never wait
    at_keep: List[int] = []  # ERROR calls: wait up to keep_wait (0.1 s) for room
    deadline = time.monotonic() + seconds
    i = 0
    while time.monotonic() < deadline:
        started = timer()
        call(i)
        (at_keep if i % 100 == 99 else below_keep).append(timer() - started)
        i += 1
    hub.queue.flush(timeout=5)
    below_keep.sort()
    p99 = below_keep[int(0.99 * len(below_keep))] / 1000
    longest_error = max(at_keep, default=0) / 1000
    out.write_text(
        json.dumps({"emitted": i, "p99": p99, "error_max": longest_error, "rss_kib": _maxrss_kib()})
    )


def stalled(seconds: float, workers: int, tmp: Path) -> Dict[str, Any]:
    """forklog with a 1 ms/record sink while ``workers`` log flat out for ``seconds``."""
    sink = SlowSink()
    hub = forklog.Hub([sink]).start()
    rss_before = _rss_now_kib()
    outs = [tmp / f"stalled-{k}.json" for k in range(workers)]
    pids = []
    for k in range(workers):
        pids.append(in_child(_flood_stalled, hub, seconds, outs[k]))
    for pid in pids:
        os.waitpid(pid, 0)
        hub.process_exited(pid)
    rss_after = _rss_now_kib()
    # Four pipes of 1 MiB and the backlog, at 1 ms a record: about 30 s to drain.
    stats = hub.stop(timeout=90)
    assert stats is not None
    results = [json.loads(out.read_text()) for out in outs]
    emitted = sum(r["emitted"] for r in results)
    return {
        "seconds": seconds,
        "workers": workers,
        "emitted": emitted,
        "written": sink.count,
        "dropped (reported)": stats.dropped,
        "lost (reported)": stats.lost,
        "unaccounted": emitted - sink.count - stats.dropped - stats.lost,
        "p99 INFO call us": max(r["p99"] for r in results),
        "longest ERROR call ms": max(r["error_max"] for r in results) / 1000,
        "master RSS growth MiB": (rss_after - rss_before) / 1024,
    }


def _rss_now_kib() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)


def median_of(runs: List[Dict[str, Any]]) -> Dict[str, Any]:
    out = dict(runs[0])
    for key in ("delivered", "p50", "p99", "p999", "lost", "lost_pct", "rss_master_mib", "rss_worker_mib"):
        out[key] = statistics.median(r[key] for r in runs)
    out["lost_max"] = max(r["lost"] for r in runs)
    return out


def table(results: List[Dict[str, Any]]) -> str:
    base = {r["workers"]: r["delivered"] for r in results if r["setup"] == "cookbook"}
    lines = [
        f"{'setup':<20}{'workers':>8}{'delivered/s':>13}{'x cookbook':>11}{'p50 us':>9}{'p99 us':>9}"
        f"{'p99.9 us':>10}{'lost':>9}{'master MiB':>12}{'worker MiB':>12}"
    ]
    for r in results:
        cookbook = base.get(r["workers"])
        ratio = f"{r['delivered'] / cookbook:.2f}" if cookbook and r["delivered"] else "-"
        delivered = f"{r['delivered'] / 1000:.1f}k" if r["delivered"] else "-"
        lines.append(
            f"{r['setup']:<20}{r['workers']:>8}{delivered:>13}{ratio:>11}{r['p50']:>9.1f}{r['p99']:>9.0f}"
            f"{r['p999']:>10.0f}{r['lost_pct']:>8.1f}%"
            f"{r['rss_master_mib']:>12.0f}{r['rss_worker_mib']:>12.0f}"
        )
    return "\n".join(lines)


def available(name: str) -> bool:
    module = {"loguru": "loguru", "clh": "concurrent_log_handler"}.get(name)
    if module is None:
        return True
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def progress_line(result: Dict[str, Any]) -> str:
    """What a setup delivered, said as it finishes; the floor writes nothing (its rate is the call's)."""
    name, workers = result["setup"], result["workers"]
    if name == "floor":
        return f"  floor x{workers}: the log call alone, nothing written"
    return f"  {name} x{workers}: {result['delivered'] / 1000:.1f}k/s"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small, one run: for CI")
    parser.add_argument("--workers", type=int, nargs="*", default=None)
    parser.add_argument("--records", type=int, default=None, help="records per worker")
    parser.add_argument("--runs", type=int, default=None)
    parser.add_argument("--setups", nargs="*", default=None, choices=SETUPS)
    parser.add_argument("--stages", action="store_true", help="the cost per record, stage by stage")
    parser.add_argument(
        "--against", metavar="REV", default=None, help="with --stages: beside a git revision's code"
    )
    args = parser.parse_args(argv)
    if args.stages:
        from benchmarks import stages  # noqa: PLC0415

        return stages.main(args.records or 40_000, args.against)
    workers_list = args.workers or ([1, 4] if args.quick else [1, 2, 4, 8])
    # --quick offers fewer records than the hub holds (queue_size plus the pipe):
    # below capacity, forklog must not lose one.
    records_total = args.records or (8_000 if args.quick else 40_000)
    runs = args.runs or (1 if args.quick else 3)
    setups = [s for s in (args.setups or SETUPS) if available(s)]
    results: List[Dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="forklog-bench-") as tmp:
        for workers in workers_list:
            per_worker = max(1, records_total // workers)
            # Round by round, every setup once: the machine's drift weighs on all alike.
            done: Dict[str, List[Dict[str, Any]]] = {name: [] for name in setups}
            for _ in range(runs):
                for name in setups:
                    done[name].append(run_isolated(name, workers, per_worker, Path(tmp)))
            for name in setups:
                results.append(median_of(done[name]))
                print(progress_line(results[-1]), file=sys.stderr)
    print(
        f"forklog benchmark: {records_total} records per run, ~150 bytes, 1% with a traceback; "
        f"median of {runs} interleaved rounds; Python {sys.version.split()[0]}, {os.cpu_count()} CPUs"
    )
    print(table(results))
    with tempfile.TemporaryDirectory(prefix="forklog-stalled-") as tmp:
        slow = stalled(2.0 if args.quick else 10.0, 4, Path(tmp))
    print("\nforklog with a sink that takes 1 ms per record, 4 workers logging flat out:")
    print(
        "  "
        + ", ".join(
            f"{key} {value:.1f}" if isinstance(value, float) else f"{key} {value}"
            for key, value in slow.items()
        )
    )
    if slow["unaccounted"]:
        print("FAILED: records neither written nor reported under the stalled sink")
        return 1
    if args.quick:
        lost = [r for r in results if r["setup"] == "forklog" and r["lost_max"]]
        if lost:
            print(f"FAILED: forklog lost records below its capacity: {lost}")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
