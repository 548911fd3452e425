"""Faults injected into forklog, to prove that the accounting tests catch them.

A test that counts records can pass while the master loses them (issue 20:
the hub's own ``lost`` once counted as delivered). This runs the accounting
tests again, each with one named fault patched in from the test side
(nothing in ``src/`` knows of it), and checks for each run that the fault
fired and that the test failed *on its accounting assertion*, by its
message, not on something unrelated.

    python -m tests.faults            # every fault (make test runs this)
    python -m tests.faults duplicate  # one

The fault reaches every process of the run, a gunicorn master and spawned
children included: ``tests/faults_site/sitecustomize.py``, put first on
``PYTHONPATH``, installs the fault named by ``TEST_FAULT`` at each
interpreter's start. Each firing appends one byte to ``TEST_FAULT_FIRED``.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence, Tuple
from xml.etree import ElementTree

REPO = Path(__file__).resolve().parents[1]
SITE = Path(__file__).resolve().parent / "faults_site"

Item = Tuple[int, int, int, int, bytes]


def fired() -> None:
    """Count one firing, in whichever process of the run it happened."""
    path = os.environ.get("TEST_FAULT_FIRED")
    if path:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, b".")
        finally:
            os.close(fd)


# -- the faults ---------------------------------------------------------------------


def _records_filtered(rewrite: Callable[[int, Item], List[Item]]) -> None:
    """Patch the master's frame reader: each whole record it returns goes through ``rewrite``."""
    from forklog._master.frame_reader import FrameReader
    from forklog._wire.framing import CONTROL

    feed = FrameReader.feed
    seen = [0]

    @functools.wraps(feed)
    def faulty(self: FrameReader, data: bytes, source: Any = None) -> List[Item]:
        out: List[Item] = []
        for item in feed(self, data, source):
            if item[0] & CONTROL:
                out.append(item)
                continue
            seen[0] += 1
            out.extend(rewrite(seen[0], item))
        return out

    FrameReader.feed = faulty  # type: ignore[method-assign]


def drop_every_nth(n: int = 50) -> None:
    """The master silently discards every ``n``-th record it reads."""

    def rewrite(count: int, item: Item) -> List[Item]:
        if count % n:
            return [item]
        fired()
        return []

    _records_filtered(rewrite)


def duplicate(n: int = 50) -> None:
    """The master hands every ``n``-th record on twice."""

    def rewrite(count: int, item: Item) -> List[Item]:
        if count % n:
            return [item]
        fired()
        return [item, item]

    _records_filtered(rewrite)


def drop_fragment(n: int = 5) -> None:
    """The master loses the second frame of every ``n``-th record of several frames."""
    from forklog._master.frame_reader import FrameReader
    from forklog._wire.framing import FIRST

    assemble = FrameReader._assemble
    started = [0]
    doomed: set[Tuple[int, int, int]] = set()

    @functools.wraps(assemble)
    def faulty(self: FrameReader, flags: int, key: Tuple[int, int, int], index: int, payload: bytes) -> Any:
        if flags & FIRST:
            started[0] += 1
            if started[0] % n == 0:
                doomed.add(key)
        elif index == 1 and key in doomed:
            doomed.discard(key)
            fired()
            return None
        return assemble(self, flags, key, index, payload)

    FrameReader._assemble = faulty  # type: ignore[method-assign]


def reopen_noop() -> None:
    """``Hub.reopen()`` (USR1) does nothing."""
    from forklog._master.hub import Hub

    def reopen(self: Hub) -> None:
        fired()

    Hub.reopen = reopen  # type: ignore[method-assign]


def two_formatters_no_lines() -> None:
    """A worker makes no lines for a record when the hub has two or more formatters."""
    import forklog._wire as wire
    from forklog._wire import lines

    encode = lines.encode_lines

    @functools.wraps(encode)
    def faulty(record: Any, renderers: Sequence[Any], *args: Any, **kwargs: Any) -> Any:
        if len(renderers) >= 2:
            fired()
            return None
        return encode(record, renderers, *args, **kwargs)

    lines.encode_lines = faulty
    wire.encode_lines = faulty


FAULTS: Dict[str, Callable[[], None]] = {
    "drop-every-nth": drop_every_nth,
    "duplicate": duplicate,
    "drop-fragment": drop_fragment,
    "reopen-noop": reopen_noop,
    "two-formatters-no-lines": two_formatters_no_lines,
}


def install_from_env() -> None:
    """Install the fault ``TEST_FAULT`` names, if any (called at every interpreter's start)."""
    name = os.environ.get("TEST_FAULT")
    if name:
        FAULTS[name]()


# -- the runs ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Run:
    """One test under one fault, and the assertion it must fail on."""

    fault: str
    test: str
    message: str  # a regular expression the failure's assertion message must match


CHAOS = "tests/integration/test_chaos.py::test_sigkill_storm"
FLOOD = "tests/integration/test_flood.py::test_flood_into_a_stalled_sink"
HTTP_CHAOS = "tests/integration/test_gunicorn_chaos.py::test_sigkill_storm_under_http_load"
LINES = "tests/unit/test_lines.py"

RUNS = [
    Run("drop-every-nth", FLOOD, r"lost \d+ records without a kill"),
    Run("drop-every-nth", CHAOS, r"lost \d+ records without a kill|missing ids the writer did not drop"),
    Run("drop-every-nth", HTTP_CHAOS, r"loss beyond what was in flight|lost without a kill"),
    Run("duplicate", FLOOD, r"duplicated"),
    Run("duplicate", HTTP_CHAOS, r"duplicated"),
    Run("duplicate", CHAOS, r"duplicated"),
    Run(
        "reopen-noop",
        "tests/unit/test_reopen.py",
        r"a record written after the reopen went to the moved file",
    ),
    Run(
        "reopen-noop",
        "tests/integration/test_logrotate.py",
        r"a record written after USR1 went to the rotated file",
    ),
    Run("drop-fragment", CHAOS, r"lost \d+ records without a kill|missing ids the writer did not drop"),
    Run("drop-fragment", HTTP_CHAOS, r"loss beyond what was in flight|lost without a kill"),
    Run(
        "two-formatters-no-lines",
        f"{LINES}::test_several_formatters_give_one_line_each_in_order",
        r"no lines made",
    ),
    Run(
        "two-formatters-no-lines",
        f"{LINES}::test_a_hub_writes_the_workers_lines_in_order",
        r"no lines made",
    ),
]


def run(case: Run) -> Tuple[bool, str]:
    """Run one case; (it held, what to say). Every test the case selects must fail on its message."""
    with tempfile.TemporaryDirectory(prefix="forklog-fault-") as scratch:
        counter, report = Path(scratch) / "fired", Path(scratch) / "report.xml"
        env = dict(
            os.environ,
            TEST_FAULT=case.fault,
            TEST_FAULT_FIRED=str(counter),
            # Shorter storms: each fault fires hundreds of times in them.
            CHAOS_KILLS="50",
            HTTP_CHAOS_KILLS="10",
            PYTHONPATH=os.pathsep.join([str(SITE), str(REPO), os.environ.get("PYTHONPATH", "")]),
        )
        argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--tb=short"]
        started = time.monotonic()
        # Its own session: a run that hangs is killed whole, the gunicorns it started included.
        with subprocess.Popen(
            [*argv, f"--junitxml={report}", case.test],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        ) as pytest:
            try:
                output, _ = pytest.communicate(timeout=TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(pytest.pid, signal.SIGKILL)
                output, _ = pytest.communicate()
                return False, f"FAIL {case.fault} -> {case.test}: no end in {TIMEOUT} s\n{output[-3000:]}"
        took = time.monotonic() - started
        firings = counter.stat().st_size if counter.exists() else 0
        outcomes = _outcomes(report) if report.exists() else {}
    where = f"{case.fault} -> {case.test} ({took:.0f} s, {len(outcomes)} tests, fired {firings}x)"
    if firings == 0:
        return False, f"FAIL {where}: the fault never fired\n{output[-3000:]}"
    missed = {test: said for test, said in outcomes.items() if not re.search(case.message, said)}
    if not outcomes or missed:
        return False, f"FAIL {where}: not caught on /{case.message}/: {missed}\n{output[-3000:]}"
    first = next(iter(outcomes.values()))
    return True, f"ok   {where}: {first[:110]}"


#: The longest one case may take (a hung test is itself a failure of the run).
TIMEOUT = 600


def _outcomes(report: Path) -> Dict[str, str]:
    """Each test of a JUnit report -> its failure's message ("" if it passed or was skipped)."""
    out: Dict[str, str] = {}
    for case in ElementTree.parse(report).iter("testcase"):
        failure = case.find("failure")
        if failure is None:
            failure = case.find("error")
        name = f"{case.get('classname')}::{case.get('name')}"
        out[name] = "" if failure is None else (failure.get("message") or "")
    return out


def main(argv: Sequence[str]) -> int:
    wanted = set(argv) or set(FAULTS)
    unknown = wanted - set(FAULTS)
    if unknown:
        print(f"unknown faults: {sorted(unknown)}; known: {sorted(FAULTS)}", file=sys.stderr)
        return 2
    cases = [case for case in RUNS if case.fault in wanted]
    failed = 0
    for case in cases:
        held, said = run(case)
        print(said, flush=True)
        failed += not held
    print(f"faults: {len(cases) - failed} of {len(cases)} runs caught by the accounting assertions")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
