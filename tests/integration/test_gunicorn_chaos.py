"""kill -9 of gunicorn workers under HTTP load, on a pipe that fills: every record is accounted for.

The hub gets a small pipe (PIPE_SIZE) and each kill lands while the pipe is
full: the master is frozen (SIGSTOP) until the victim, a worker that holds
drops it could not report, is dead. So every run has drops, reported, and
losses of killed workers, reported; and each worker's records are checked
by identity against what its log calls sent (tests/apps/counting_app.py).
"""

from __future__ import annotations

import dataclasses
import os
import random
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Set, Tuple

import psutil
import pytest

from tests.apps.counts import CALL, STATE, identity
from tests.integration.gunicorn_proc import Accounting, Gunicorn, wait_for
from tests.integration.test_gunicorn import BIG, N

KILLS = int(os.environ.get("HTTP_CHAOS_KILLS", "30"))
WORKERS = 4
CLIENTS = 6
#: Small enough that the load fills it in a few requests; big enough that
#: one burst request's records, its 5 KB one included, fit an empty pipe.
PIPE_SIZE = 16 << 10
#: Shorter than a freeze of the master (kill_one's 3 s): each worker has a pipe
#: of its own, so one that fills in the middle of a large record waits for room
#: for the rest, serving nothing; past this it gives the record up, a drop it
#: counts after some of its frames reached the master (which sets them aside),
#: and becomes a victim that holds drops it has not reported.
KEEP_WAIT = 1.0
#: Requests after the storm, one at a time into an empty pipe: written whole.
AFTER = 5

CONF = """\
# The shipped gunicorn_conf.py's hub, on a small pipe; the app loaded before the fork.
import forklog.gunicorn
from forklog import Settings
from forklog.gunicorn import *

settings = Settings.from_env()
options = dict(settings.hub_options(), pipe_size={pipe_size}, keep_wait={keep_wait})
forklog.gunicorn.configure(handlers=settings.handlers, **options)
# tests/apps/counting_app.py counts a worker's calls from its first record on.
preload_app = True
accesslog = "-"
"""

SIGKILLED = "Worker (pid:{pid}) was sent SIGKILL! Perhaps out of memory?"

Identity = Tuple[int, int]


@dataclasses.dataclass(frozen=True)
class Writer:
    """One process's log calls, as tests/apps/counting_app.py recorded them."""

    calls: Tuple[Identity, ...]  # every call started, in order
    numbered: int  # records numbered once the last call returned
    unreported: int  # drops not reported yet, then
    returned: int  # calls that returned

    @property
    def in_call(self) -> bool:
        """Inside a log call when last seen (killed there): its record may or may not be out."""
        return len(self.calls) > self.returned


def read_writer(directory: Path, pid: int) -> Optional[Writer]:
    """``pid``'s calls; None before its first call."""
    try:
        state = (directory / str(pid)).read_bytes()
        calls = (directory / f"{pid}.calls").read_bytes()
    except FileNotFoundError:
        return None
    numbered, unreported, returned = STATE.unpack(state[: STATE.size])
    # A call's entry is one write() of CALL.size bytes: whole or absent.
    entries = tuple(CALL.unpack_from(calls, at) for at in range(0, len(calls), CALL.size))
    return Writer(entries, numbered, unreported, returned)


def read_writers(directory: Path) -> Dict[int, Writer]:
    out = {}
    for path in directory.iterdir():
        if path.name.isdigit():
            writer = read_writer(directory, int(path.name))
            assert writer is not None, f"pid {path.name}: a state file and no calls file"
            out[int(path.name)] = writer
    return out


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Gunicorn]:
    # A long timeout: a worker busy when the storm ends must not be recycled meanwhile.
    counts = tmp_path / "counts"
    counts.mkdir()
    conf = tmp_path / "chaos_conf.py"
    conf.write_text(CONF.format(pipe_size=PIPE_SIZE, keep_wait=KEEP_WAIT))
    gunicorn = Gunicorn(
        tmp_path,
        ["-w", str(WORKERS), "--timeout", "60"],
        conf=conf,
        app="tests.apps.counting_app:app",
        env={"COUNTS_DIR": str(counts)},
    )
    try:
        yield gunicorn.start()
    finally:
        thaw(gunicorn)
        gunicorn.kill_group()


def thaw(server: Gunicorn) -> None:
    """The master running again (SIGCONT): after a kill, and whatever failed meanwhile."""
    if server.alive():
        server.signal(signal.SIGCONT)


def live_workers(server: Gunicorn) -> List[int]:
    """The master's children that run (not zombies waiting to be reaped)."""
    out = []
    for child in psutil.Process(server.pid).children():
        try:
            if child.status() != psutil.STATUS_ZOMBIE:
                out.append(child.pid)
        except psutil.NoSuchProcess:
            continue
    return sorted(out)


def is_dead(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


class Load:
    """CLIENTS threads asking for bursts until stopped; request id -> status."""

    def __init__(self, server: Gunicorn) -> None:
        self.server = server
        self.results: Dict[str, int] = {}
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._client, args=(c,)) for c in range(CLIENTS)]
        for thread in self._threads:
            thread.start()

    def _client(self, client: int) -> None:
        for k in range(1_000_000):
            if self.stop.is_set():
                return
            rid = f"s{client}-{k}"
            status = self.server.get(f"/burst?n={N}&big={BIG}&id={rid}", timeout=30)
            with self._lock:
                self.results[rid] = status

    def served(self) -> int:
        with self._lock:
            return sum(status == 200 for status in self.results.values())

    def join(self) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(60)
        assert not any(thread.is_alive() for thread in self._threads), "a client is still waiting"


def kill_one(server: Gunicorn, counts: Path, rng: random.Random, killed: Set[int]) -> Optional[int]:
    """SIGKILL one live worker while the pipe is full and it holds drops it has not reported.

    The master is frozen meanwhile: nothing reads the pipe, so the load fills
    it and the workers drop; the victim is one of those that dropped, killed
    before it can report. None if no worker dropped in time (the master is
    then thawed, and the caller tries again).
    """
    server.signal(signal.SIGSTOP)
    try:
        candidates: List[int] = []

        def someone_dropped() -> bool:
            candidates[:] = []
            for pid in live_workers(server):
                writer = read_writer(counts, pid)
                if pid not in killed and writer is not None and writer.unreported > 0:
                    candidates.append(pid)
            return bool(candidates)

        deadline = time.monotonic() + 3
        while not someone_dropped():
            if time.monotonic() > deadline:
                return None  # none dropped in time: thaw, and the caller tries again
            time.sleep(0.002)
        victim = rng.choice(candidates)
        os.kill(victim, signal.SIGKILL)  # a live child of a frozen master: it cannot be reaped yet
        wait_for(lambda: is_dead(victim), 10, f"worker {victim} to die of its SIGKILL", interval=0.002)
        return victim
    finally:
        thaw(server)


def reaped(server: Gunicorn, pid: int) -> bool:
    """Whether gunicorn has reaped ``pid``; if not, a SIGCHLD to wake it.

    The SIGCHLD of a child that died while the master was stopped goes to
    whichever of its threads runs first after SIGCONT, often one of the
    hub's: gunicorn's main loop, asleep on its signal queue, then sees it a
    second later. One sent to a running master wakes the main thread (the
    kernel prefers it), and gunicorn reaps with WNOHANG: a spare one is harmless.
    """
    if pid not in [child.pid for child in psutil.Process(server.pid).children()]:
        return True
    server.signal(signal.SIGCHLD)
    return False


def test_sigkill_storm_under_http_load(server: Gunicorn) -> None:
    """30 kill -9s on a full pipe under load: each worker's records arrive once and in order, or are
    reported dropped by the worker, or (a killed worker's, and no more than it had in flight) lost."""
    counts = server.tmp_path / "counts"
    rng = random.Random(7)
    killed: List[int] = []
    load = Load(server)
    started = time.monotonic()
    try:
        deadline = time.monotonic() + 120
        while len(killed) < KILLS:
            assert time.monotonic() < deadline, f"only {len(killed)} of {KILLS} kills in 120 s"
            target = load.served() + rng.randint(1, 8)

            def served(target: int = target) -> bool:
                return load.served() >= target

            wait_for(served, 30, "requests to be served")
            victim = kill_one(server, counts, rng, set(killed))
            if victim is None:
                continue
            killed.append(victim)

            def gone(victim: int = victim) -> bool:
                return reaped(server, victim)

            wait_for(gone, 30, f"gunicorn to reap worker {victim}", interval=0.01)
            wait_for(lambda: len(live_workers(server)) == WORKERS, 30, "gunicorn to respawn its workers")
    finally:
        thaw(server)
        load.join()
    storm = time.monotonic() - started
    wait_for(lambda: len(live_workers(server)) == WORKERS, 30, "gunicorn to respawn its workers")
    server.wait_logged("drained")

    # After the storm, requests one at a time into an empty pipe: written whole.
    after = [f"after{k}" for k in range(AFTER)]
    for rid in after:
        assert server.get(f"/burst?n={N}&big={BIG}&id={rid}") == 200
        server.wait_logged(rid)
    assert server.stop() == 0

    accounting = Accounting(server.log_lines())
    assert not accounting.torn, accounting.torn[:3]
    master = str(server.pid)
    writers = {pid: w for pid, w in read_writers(counts).items() if pid != server.pid}
    by_pid = accounting.messages_by_pid()
    dropped = {pid: sum(levels.values()) for pid, levels in accounting.dropped().items()}
    lost = accounting.lost()
    strangers = set(by_pid) - {str(pid) for pid in writers} - {master}
    assert not strangers, f"records of processes that made no log call: {sorted(strangers)}"
    assert set(lost) <= {str(pid) for pid in writers}, f"losses of unknown writers: {lost}"

    # Every record of every worker, by identity: delivered, reported dropped, or (killed) lost.
    for pid, writer in sorted(writers.items()):
        check_worker(
            pid,
            writer,
            delivered=by_pid.get(str(pid), []),
            reported=dropped.get(str(pid), 0),
            lost=lost.get(str(pid), {}),
            killed=pid in killed,
        )

    # The regime this test is for: the pipe filled, drops were reported, killed workers lost theirs.
    losses = {pid: sum(lost.get(str(pid), {}).values()) for pid in killed}
    total_dropped = sum(dropped.get(str(pid), 0) for pid in writers)
    print(
        f"\nstorm {storm:.1f}s, {load.served()} requests served, {len(writers)} workers, "
        f"{total_dropped} drops reported by {sum(str(p) in dropped for p in writers)}, "
        f"{sum(losses.values())} lost by {sum(1 for n in losses.values() if n)} of {KILLS} killed "
        f"({sum(writers[p].in_call for p in killed)} killed inside a log call)"
    )
    assert total_dropped, "no drop reported: the pipe never filled"
    assert any(losses.values()), f"no loss reported of {KILLS} workers killed holding unreported drops"

    # Every kill landed: gunicorn reaped each victim dead of its SIGKILL.
    assert len(killed) == len(set(killed)) == KILLS
    messages = {r["message"] for r in accounting.records if r["pid"] == master}
    unreaped = [pid for pid in killed if SIGKILLED.format(pid=pid) not in messages]
    assert not unreaped, f"no 'was sent SIGKILL' line for workers {unreaped}"

    # And the hub kept the rest: each request after the storm is whole, once.
    for rid in after:
        assert accounting.burst.get(rid) == {i: 1 for i in range(N)}, (
            f"request {rid}: {accounting.burst.get(rid)}"
        )
        assert accounting.big.get(rid) == [BIG], f"request {rid}: big record {accounting.big.get(rid)}"


def check_worker(
    pid: int, writer: Writer, *, delivered: List[str], reported: int, lost: Dict[str, int], killed: bool
) -> None:
    """One worker's records by identity (its message): what the file holds of it is what its calls
    sent, once each and in order; the rest was reported dropped by the worker, or (killed) lost.

    ``delivered``: its records in the file; ``reported``: its drop reports;
    ``lost``: the master's loss reports of it, by why.
    """
    name = f"pid {pid} ({'killed' if killed else 'not killed'})"
    calls = writer.calls
    # Identities are messages, and a worker's are all distinct (each burst
    # record carries its request id and seq, each access line its path).
    index = {call: k for k, call in enumerate(calls)}
    assert len(index) == len(calls), f"{name}: two calls with one message: the identities are ambiguous"
    got = [index.get(identity(message), -1) for message in delivered]
    strangers = [message[:100] for message, k in zip(delivered, got, strict=False) if k < 0]
    assert not strangers, f"{name}: delivered ids not a subset of emitted: {strangers[:5]}"
    twice = [delivered[got.index(k)][:100] for k, times in Counter(got).items() if times > 1]
    assert not twice, f"{name}: duplicated: {twice[:5]}"
    swapped = [
        (delivered[j][:100], delivered[j + 1][:100]) for j in range(len(got) - 1) if got[j] > got[j + 1]
    ]
    assert not swapped, f"{name}: out of order: {swapped[:3]}"

    # Emitted, and neither in the file nor in a drop report of the worker's.
    missing = len(calls) - len(delivered) - reported
    loss = sum(lost.values())
    # Each call numbered one record ("Booting worker" on: the app is preloaded).
    assert writer.numbered == writer.returned, (
        f"{name}: {writer.numbered} records numbered by {writer.returned} returned calls"
    )
    if not killed:
        # It left through worker_exit: every drop reported, nothing lost.
        assert not lost, f"{name}: lost without a kill: {lost}"
        assert not writer.in_call, f"{name}: stopped inside a log call, not killed"
        assert missing == 0, (
            f"{name}: emitted {len(calls)}, delivered {len(delivered)}, reported dropped {reported}: "
            + (f"{missing} gone silently" if missing > 0 else f"{-missing} drops over-counted")
        )
        return
    assert set(lost) <= {"killed"}, f"{name}: a killed worker's loss labelled {sorted(lost)}"
    # In flight at the kill: the drops it had not reported, and the record of
    # the call under way if that one is not in the file (not numbered yet,
    # dropped, or cut short between two frames).
    under_way = writer.in_call and len(calls) - 1 not in got
    in_flight = writer.unreported + under_way
    assert missing <= in_flight, (
        f"{name}: loss beyond what was in flight: {missing} emitted records neither delivered nor "
        f"reported dropped, {writer.unreported} unreported drops + {int(under_way)} call under way "
        f"(emitted {len(calls)}, delivered {len(delivered)}, reported dropped {reported}, lost {loss})"
    )
    # Exactly: a call under way whose record went out may have reported the drops before it too.
    assert missing == in_flight or (writer.in_call and not under_way and missing == 0), (
        f"{name}: {missing} records missing, {in_flight} in flight: drops over-counted"
    )
    # And the master said so: all of it, but the record of a call under way it never saw numbered.
    assert missing - under_way <= loss <= missing, (
        f"{name}: {missing} records missing, {loss} reported lost: "
        + ("gone silently" if loss < missing else "loss over-counted")
    )
