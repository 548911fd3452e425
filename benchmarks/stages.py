"""``python -m benchmarks --stages [--against REV]``: the CPU per record, stage by stage.

The records are the throughput benchmark's (about 150 bytes, 1% with a
traceback). Each stage runs in this thread on all of them, ``repeats``
times after a warm-up run, with the garbage collector held off while it
is timed; the fastest run is printed, in µs a record (on a shared
machine, noise only ever adds time: the median of this VM's runs moved by
a third from one process to the next).

``--against REV`` runs the same stages on a git revision's ``src/`` (taken
with ``git archive``) in the same run: rounds alternate between the two
codes, each in a fresh interpreter, and the table shows both and the
difference. An issue that names a budget per stage ("within +0.2 µs of
main's") is checked with it.
"""

from __future__ import annotations

import gc
import json
import logging
import marshal
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import forklog
from benchmarks.throughput import FORMAT, _app_log_call

ROOT = Path(__file__).resolve().parent.parent
ROUNDS = 3


def measure(records: int = 40_000, repeats: int = 7) -> List[Tuple[str, float]]:
    """The CPU per record (µs, the fastest of ``repeats``), stage by stage, in this thread.

    The records are the benchmark's (1% with a traceback), encoded by a
    worker's own code, cut into frames and read back; the listener writes
    them to a file as in a hub, with its fast lane off and on.
    """
    from forklog import _wire as wire  # noqa: PLC0415
    from forklog._master import scheduling  # noqa: PLC0415
    from forklog._master.backlog import Backlog  # noqa: PLC0415
    from forklog._master.counters import Counters  # noqa: PLC0415
    from forklog._master.frame_reader import FrameReader  # noqa: PLC0415
    from forklog._master.listener import Listener  # noqa: PLC0415
    from forklog._renderers import record_renderers  # noqa: PLC0415
    from forklog._stderr import Reporter  # noqa: PLC0415
    from forklog._wire import framing  # noqa: PLC0415

    decode_fields = getattr(wire, "decode_fields", marshal.loads)  # marshal before issue 21

    made: List[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            made.append(record)

    log = logging.Logger("bench")
    log.addHandler(Keep())
    call = _app_log_call(log)
    for i in range(records):
        call(i)
    payloads = [wire.encode(record) for record in made]
    formatter = forklog.TextFormatter(FORMAT)
    renderers = record_renderers((formatter,))
    lines = [wire.encode_lines(record, renderers, 4242, True) or wire.encode(record) for record in made]
    data = b"".join(
        b"".join(framing.frames(0, 4242, 1, seq, payload)) for seq, payload in enumerate(payloads)
    )
    line_items = [(framing.FIRST | framing.LAST, 4242, 1, seq, payload) for seq, payload in enumerate(lines)]
    items: List[Any] = []
    decoded: List[logging.LogRecord] = []
    tmp = Path(tempfile.mkdtemp(prefix="forklog-stages-"))

    def frames() -> None:
        reader = FrameReader()
        items[:] = [
            item
            for start in range(0, len(data), 1 << 20)
            for item in reader.feed(data[start : start + (1 << 20)])
        ]

    def backlog() -> None:
        queue = Backlog(records + 1, 1 << 40)
        for start in range(0, len(items), 2000):
            queue.put_many(items[start : start + 2000])
        while queue.get_batch(256, 0):
            pass

    def decode() -> None:
        decoded[:] = [wire.decode(payload, 4242) for payload in payloads]

    def listener(fast: bool, made_lines: bool = False) -> Callable[[], None]:
        def run() -> None:
            sink = forklog.RotatingFileSink(tmp / f"{fast}.log", maxBytes=1 << 40, backupCount=1)
            sink.setFormatter(forklog.TextFormatter(FORMAT))
            flush, sink.flush = sink.flush, lambda: None  # type: ignore[method-assign]
            the_listener = Listener(
                Backlog(1, 1),
                [("file", sink)],
                Counters(["file"]),
                Reporter(),
                dispatch_lock=scheduling.DispatchLock(),
                channel=None,  # type: ignore[arg-type]
            )
            the_listener.FAST_LANE = fast
            batch = items
            if made_lines:
                the_listener.lines.use({"file": (0, sink.formatter)})  # type: ignore[dict-item]
                batch = line_items
            for start in range(0, len(batch), 256):
                the_listener.dispatch_batch(batch[start : start + 256])
                flush()
            sink.close()
            os.unlink(sink.baseFilename)

        return run

    traced = [record for record in made if record.exc_info]
    steps: List[Tuple[str, Callable[[], object]]] = [
        ("worker: encode fields", lambda: [wire.encode(record) for record in made]),
        # The tracebacks' part of the above, source lines included (they travel from the worker).
        ("worker: tracebacks (1% of records)", lambda: [wire.encode(record) for record in traced]),
        ("worker: make lines", lambda: [wire.encode_lines(record, renderers, 4242, True) for record in made]),
        ("receiver: frames", frames),
        ("receiver+listener: backlog", backlog),
        # The fields read from their layout (issue 21, item 5); marshal.loads before it.
        ("decode fields", lambda: [decode_fields(payload) for payload in payloads]),
        ("decode to a LogRecord", decode),
        ("TextFormatter.format", lambda: [formatter.format(record) for record in decoded]),
        ("listener, LogRecord path", listener(False)),
        ("listener, fast lane", listener(True)),
        ("listener, lines made by workers", listener(True, made_lines=True)),
    ]
    out = []
    for name, step in steps:
        step()  # warm: caches filled, memory taken
        times = []
        for _ in range(repeats):
            gc.collect()
            gc.disable()  # a collection lands in whichever step it falls: none is timed
            try:
                started = time.perf_counter()
                step()
                times.append(time.perf_counter() - started)
            finally:
                gc.enable()
        out.append((name, min(times) / records * 1e6))
    return out


def main(records: int, against: str | None) -> int:
    """Print the stages of this code, or beside ``against``'s; 0."""
    version = sys.version.split()[0]
    if against is None:
        print(f"CPU per record, µs (the fastest of 7; Python {version}):")
        for name, micros in measure(records):
            print(f"  {name:<34}{micros:6.2f}")
        return 0
    with tempfile.TemporaryDirectory(prefix="forklog-against-") as tmp:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", against, "src"], check=True, capture_output=True
        ).stdout
        with tarfile.open(fileobj=BytesIO(archive)) as tar:
            tar.extractall(tmp, filter="data")
        codes = {"this": ROOT / "src", against: Path(tmp) / "src"}
        runs: Dict[str, List[Dict[str, float]]] = {code: [] for code in codes}
        for _ in range(ROUNDS):  # alternating: the machine's drift weighs on both alike
            for code, src in codes.items():
                runs[code].append(_measure_in(src, records))
    print(
        f"CPU per record, µs (the fastest of {ROUNDS} rounds of 7 runs; Python {version}), "
        f"this tree beside {against}:"
    )
    print(f"  {'stage':<34}{'this':>8}{against[:10]:>12}{'diff':>8}")
    names = list(runs["this"][0])
    for name in names + [n for n in runs[against][0] if n not in names]:
        mine, theirs = (_best(runs[code], name) for code in ("this", against))
        diff = f"{mine - theirs:+8.2f}" if mine is not None and theirs is not None else f"{'-':>8}"
        print(f"  {name:<34}{_cell(mine, 8)}{_cell(theirs, 12)}{diff}")
    return 0


def _measure_in(src: Path, records: int) -> Dict[str, float]:
    """The stages, measured in a fresh interpreter importing forklog from ``src``."""
    code = (
        "import json, forklog; from benchmarks.stages import measure; "
        f"print(json.dumps([forklog.__file__, measure({records})]))"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), str(ROOT)])}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout
    where, stages = json.loads(out.splitlines()[-1])
    if not Path(where).resolve().is_relative_to(src.resolve()):
        raise SystemExit(f"forklog came from {where}, not {src}")
    return {name: micros for name, micros in stages}


def _best(runs: List[Dict[str, float]], name: str) -> float | None:
    values = [run[name] for run in runs if name in run]
    return min(values) if values else None


def _cell(value: float | None, width: int) -> str:
    return f"{value:{width}.2f}" if value is not None else f"{'-':>{width}}"
