"""``Hub.reopen()`` (USR1) where only the reopen can put the records in the new file.

A file sink of forklog's own notices a moved file by itself, within
``RotatingFileSink.CHECK_INTERVAL``; these tests set that interval to a day,
so the records written after the move reach the new file only if the reopen
opened it. An adopted ``TimedRotatingFileHandler`` has no such check at all.

Each test writes records, moves the file away as logrotate's ``create`` mode
does (a rename), calls ``hub.reopen()``, writes more, and accounts for every
record: those written after the reopen are in the new file at the path, none
in the moved one, and every record is in exactly one of the two files once.
"""

from __future__ import annotations

import functools
import logging
import logging.handlers
import os
import select
import time
from collections import Counter
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Sequence

import pytest

import forklog
from forklog import RotatingFileSink
from tests.support import Collect, Stall, wait_for

#: The message of the assertion that fails when the reopen did nothing.
MISPLACED = "a record written after the reopen went to the moved file"

#: Records per writer and phase.
COUNT = 40

#: Seconds a forked child waits for the test to tell it to go on.
CHILD_WAIT = 30.0


@pytest.fixture(autouse=True)
def no_moved_file_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """The file sinks' own moved-file check out of the way: only the reopen opens the new file."""
    monkeypatch.setattr(RotatingFileSink, "CHECK_INTERVAL", 86_400.0)


def tags(writer: str, phase: str) -> List[str]:
    return [f"{writer} {phase} {i}" for i in range(COUNT)]


def lines_of(path: Path) -> List[str]:
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


def account(path: Path, moved: Path, before: Sequence[str], after: Sequence[str], what: str) -> None:
    """``after`` all in the file at ``path``, none in ``moved``; each record once across both."""
    old, new = lines_of(moved), lines_of(path)
    misplaced = [line for line in old if line in set(after)]
    assert not misplaced, f"{MISPLACED} ({what}): {len(misplaced)} of {len(after)}, first {misplaced[:3]}"
    early = [line for line in new if line in set(before)]
    assert not early, f"a record written before the move is in the new file ({what}): {early[:3]}"
    foreign = [line for line in old + new if line not in set(before) | set(after)]
    assert not foreign, f"lines no test record made ({what}): {foreign[:3]}"
    counts = Counter(old + new)
    wrong = {line: counts[line] for line in [*before, *after] if counts[line] != 1}
    assert not wrong, (
        f"records not written exactly once across both files ({what}): {list(wrong.items())[:5]}"
    )


def wait_written(path: Path, wanted: Sequence[str], what: str) -> None:
    """Until every one of ``wanted`` is in the file at ``path`` (the listener wrote them)."""
    wait_for(lambda: set(wanted) <= set(lines_of(path)), 10, f"{what} in {path.name}")


class Child:
    """A forked writer that waits for ``go()`` between its two phases."""

    def __init__(self, hub: forklog.Hub, pid: int, go_fd: int) -> None:
        self.hub, self.pid, self.go_fd = hub, pid, go_fd
        self.went = False

    def go(self) -> None:
        os.write(self.go_fd, b"g")
        os.close(self.go_fd)
        self.went = True

    def join(self) -> None:
        """Wait for the child's exit, settle its account; without go() (a failure before) it exits now."""
        if not self.went:
            os.close(self.go_fd)  # end of file: the child leaves without its second phase
        deadline = time.monotonic() + CHILD_WAIT + 10
        while True:
            done, status = os.waitpid(self.pid, os.WNOHANG)
            if done:
                break
            assert time.monotonic() < deadline, f"child {self.pid} did not exit"
            time.sleep(0.01)
        self.hub.process_exited(self.pid)
        assert not self.went or os.waitstatus_to_exitcode(status) == 0, f"child {self.pid} failed: {status}"


def fork_writer(hub: forklog.Hub, work: Callable[[int], None]) -> Child:
    """Fork a child that attaches to ``hub`` (``init_worker``) and runs ``work(go_fd)``."""
    go_read, go_write = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(go_write)
            forklog.init_worker(hub.queue)
            work(go_read)
            hub.queue.flush(timeout=1.0)
            code = 0
        finally:
            os._exit(code)
    os.close(go_read)
    return Child(hub, pid, go_write)


def wait_for_go(go_fd: int) -> None:
    """In the child: block until the test says go (a byte on the pipe), within CHILD_WAIT."""
    ready, _, _ = select.select([go_fd], [], [], CHILD_WAIT)
    if not ready or os.read(go_fd, 1) != b"g":
        os._exit(3)


@pytest.fixture
def master_log() -> Iterator[logging.Logger]:
    """The master's own logger onto the hub (as gunicorn's master logs through it)."""
    log = logging.getLogger("forklog.test.reopen")
    log.propagate = False
    log.setLevel(logging.DEBUG)
    yield log
    for handler in list(log.handlers):
        log.removeHandler(handler)


def message_only(handler: logging.Handler) -> logging.Handler:
    handler.setFormatter(logging.Formatter("%(message)s"))
    return handler


HUB_SINKS: Dict[str, Callable[[Path], logging.Handler]] = {
    "rotating-file-sink": RotatingFileSink,
    "time-rotating-file-sink": functools.partial(RotatingFileSink, maxBytes=1 << 30, backupCount=3, when="D"),
    "stdlib-file-handler": logging.FileHandler,
}


@pytest.mark.parametrize("kind", list(HUB_SINKS))
def test_reopen_moves_the_hub_sinks_to_the_new_file(
    tmp_path: Path, kind: str, master_log: logging.Logger
) -> None:
    """The master and a forked worker log across a move + reopen: later records only in the new file."""
    path, moved = tmp_path / "app.log", tmp_path / "app.log.1"
    sink = message_only(HUB_SINKS[kind](path))
    with forklog.Hub([sink]) as hub:
        master_log.addHandler(hub.handler())

        def work(go_fd: int) -> None:
            child = logging.getLogger("reopen_child")  # to root: init_worker's handler
            for tag in tags("child", "before"):
                child.warning(tag)
            wait_for_go(go_fd)
            for tag in tags("child", "after"):
                child.warning(tag)

        child = fork_writer(hub, work)
        try:
            for tag in tags("master", "before"):
                master_log.warning(tag)
            before = tags("master", "before") + tags("child", "before")
            wait_written(path, before, "the records before the move")
            os.rename(path, moved)  # logrotate's "create" mode
            hub.reopen()
            for tag in tags("master", "after"):
                master_log.warning(tag)
            child.go()
        finally:
            child.join()
        stats = hub.stop(timeout=10)
    assert stats is not None and stats.lost == 0
    after = tags("master", "after") + tags("child", "after")
    account(path, moved, before, after, f"hub sink {kind}")


ADOPTED: Dict[str, Callable[[str], logging.FileHandler]] = {
    "FileHandler": logging.FileHandler,
    "RotatingFileHandler": functools.partial(
        logging.handlers.RotatingFileHandler, maxBytes=1 << 30, backupCount=3
    ),
    # "D": a day from the file's creation; never rolls over during the test.
    "TimedRotatingFileHandler": functools.partial(
        logging.handlers.TimedRotatingFileHandler, when="D", backupCount=3
    ),
    "WatchedFileHandler": logging.handlers.WatchedFileHandler,
}


@pytest.mark.parametrize("kind", list(ADOPTED))
def test_reopen_moves_an_adopted_handler_to_the_new_file(tmp_path: Path, kind: str) -> None:
    """A worker's own file handler (adopted: the master writes it) follows a move + reopen."""
    path, moved = tmp_path / "own.log", tmp_path / "own.log.1"
    written = tmp_path / "adopted"  # the child says its handler was adopted
    with forklog.Hub([Collect()]) as hub:

        def work(go_fd: int) -> None:
            own = logging.getLogger("forklog.test.reopen.own")
            own.propagate = False
            handler = ADOPTED[kind](str(path))
            own.addHandler(message_only(handler))
            if handler.stream is None:  # the worker holds no file: the master writes it
                written.touch()
            for tag in tags("worker", "before"):
                own.warning(tag)
            wait_for_go(go_fd)
            for tag in tags("worker", "after"):
                own.warning(tag)

        child = fork_writer(hub, work)
        try:
            before = tags("worker", "before")
            wait_written(path, before, "the records before the move")
            assert written.exists(), f"the worker's {kind} was not adopted: it holds its own file"
            os.rename(path, moved)  # logrotate's "create" mode
            hub.reopen()
            child.go()
        finally:
            child.join()
        stats = hub.stop(timeout=10)
    assert stats is not None and stats.lost == 0
    assert stats.written.get(str(path)) == 2 * COUNT, f"the target wrote {stats.written}"
    account(path, moved, before, tags("worker", "after"), f"adopted {kind}")


def test_a_reopen_asked_during_a_batch_is_done_before_the_next(
    tmp_path: Path, master_log: logging.Logger
) -> None:
    """USR1 mid-batch: reopen() returns at once; the batches after it go to the new file."""
    path, moved = tmp_path / "app.log", tmp_path / "app.log.1"
    stall = Stall()
    stall.go.set()
    with forklog.Hub([message_only(RotatingFileSink(path)), stall]) as hub:
        master_log.addHandler(hub.handler())
        before = tags("master", "before")
        for tag in before:
            master_log.warning(tag)
        wait_written(path, before, "the records before the move")
        stall.go.clear()
        stall.entered.clear()
        master_log.warning("held")  # the listener is now inside this record's batch
        try:
            assert stall.entered.wait(10), "the listener did not reach the stalled sink"
            os.rename(path, moved)
            started = time.monotonic()
            hub.reopen()
            assert time.monotonic() - started < 1.0, "reopen() waited for the stalled batch"
        finally:
            stall.go.set()
        after = tags("master", "after")
        for tag in after:
            master_log.warning(tag)
        stats = hub.stop(timeout=10)
    assert stats is not None and stats.lost == 0
    # "held" was sent before the reopen: in either file, once.
    account(path, moved, [*before, "held"], after, "a reopen deferred past a batch")
