"""Issue 21, item 6: a traceback's frames never make the master read a file.

A real hub and forked children. The attacking child logs a real exception
through the worker's own code (its lines or its fields, as a worker would
send them), with each frame's file name and line number replaced by a file
the master can read and the worker should not make it read: a root-only
0600 file, a FIFO, ``/dev/zero``. The master must write the record with no
line of that file, must not open it at all (an audit hook in this process,
the master, watches ``open``), and another worker's record, logged after,
must be written within a second. The source lines a traceback shows come
from the worker, which has them.
"""

from __future__ import annotations

import linecache
import logging
import os
import stat
import sys
from pathlib import Path
from typing import Any, Callable, Iterator, List, Optional, Set, Tuple

import pytest

import forklog
from forklog._wire import tracebacks
from tests.support import Collect, PeakRss, in_child, wait_for

# -- what the master opens ------------------------------------------------------

#: Paths whose opening by this process (the master) is recorded in OPENED.
WATCHED: Set[str] = set()
#: Of those, the ones whose opening is refused: reading /dev/zero through
#: linecache would take the test machine's memory before failing.
REFUSED: Set[str] = set()
OPENED: List[str] = []
_MASTER = os.getpid()


def _audit(event: str, args: Tuple[Any, ...]) -> None:
    if event != "open" or not WATCHED or os.getpid() != _MASTER:
        return
    path = args[0]
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if isinstance(path, str) and path in WATCHED:
        OPENED.append(path)
        if path in REFUSED:
            raise PermissionError(f"the test refuses to let the master open {path}")


sys.addaudithook(_audit)


@pytest.fixture
def watch() -> Iterator[Callable[[str, bool], None]]:
    def add(path: str, refuse: bool = False) -> None:
        WATCHED.add(path)
        if refuse:
            REFUSED.add(path)

    OPENED.clear()
    try:
        yield add
    finally:
        WATCHED.clear()
        REFUSED.clear()


# -- a hub, its outputs, its workers --------------------------------------------


class Outputs:
    """A hub's sinks: a file and a console (a stream), plus, on the fields path, a handler of records."""

    def __init__(self, tmp_path: Path, path: str) -> None:
        self.log_file = tmp_path / "app.log"
        self.console_file = tmp_path / "console.txt"
        self.console = self.console_file.open("w", encoding="utf-8")
        console = logging.StreamHandler(self.console)
        console.setFormatter(forklog.TextFormatter("%(levelname)s %(name)s [%(process)d] %(message)s"))
        self.collect: Optional[Collect] = Collect() if path == "fields" else None
        # Files and streams only: the workers make the lines. A handler of another kind: the fields travel.
        self.sinks: List[logging.Handler] = [forklog.RotatingFileSink(str(self.log_file)), console]
        if self.collect is not None:
            self.sinks.append(self.collect)

    def texts(self) -> List[str]:
        """Everything written so far, each output as one text."""
        self.console.flush()
        out = [
            self.log_file.read_text(errors="replace") if self.log_file.exists() else "",
            self.console_file.read_text(errors="replace"),
        ]
        if self.collect is not None:
            out.append("".join(f"{r.getMessage()}\n{r.exc_text or ''}\n" for r in self.collect.records))
        return out

    def written(self, text: str) -> bool:
        """Whether ``text`` is in every output."""
        return all(text in output for output in self.texts())

    def close(self) -> None:
        self.console.close()


def a() -> None:
    b()


def b() -> None:
    c()


def c() -> None:
    raise ValueError("hostile frames")


def log_with_frames_naming(hub: forklog.Hub, target: Optional[str]) -> None:
    """In a worker: log a real exception, each of its frames renamed ``target``, lines 1, 2, 3..."""
    forklog.init_worker(hub.queue)
    if target is not None:
        real = tracebacks.extract

        def hostile(value: BaseException) -> Any:
            # The chain the worker's own code makes, as a worker could patch it:
            # file and line replaced, any source line the frame carries emptied.
            chain = real(value)
            assert chain is not None
            return [
                (
                    name,
                    message,
                    [(target, line, f[2], *("" for _ in f[3:])) for line, f in enumerate(fs, 1)],
                    via,
                )
                for name, message, fs, via in chain
            ]

        tracebacks.extract = hostile  # this child only
    try:
        a()
    except ValueError:
        logging.getLogger("hostile").exception("the hostile record")
    assert hub.queue.leave(timeout=1.0)


def another_worker_is_heard(hub: forklog.Hub, outputs: Outputs) -> None:
    """A second worker's record, logged after the attack, is written within a second."""

    def log() -> None:
        forklog.init_worker(hub.queue)
        logging.getLogger("bystander").error("bystander after the attack")
        hub.queue.leave(timeout=1.0)

    in_child(log)
    wait_for(lambda: outputs.written("bystander after the attack"), 1.0, "the other worker's record")
    assert hub.stats().listener_alive


def unblock(fifo: Path) -> None:
    """Give a reader blocked on ``fifo`` a line and its end (the old master opened it), else nothing."""
    WATCHED.discard(str(fifo))  # this open is the test's, not the listener's
    try:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        return  # no reader: nobody opened it
    try:
        os.write(fd, b"FIFO-LINE-1\nFIFO-LINE-2\nFIFO-LINE-3\n")
    finally:
        os.close(fd)


# -- the attacks ----------------------------------------------------------------

PATHS = ["fields", "lines"]


@pytest.mark.parametrize("path", PATHS)
def test_frames_naming_a_root_only_file_leak_none_of_it(
    tmp_path: Path, path: str, watch: Callable[[str, bool], None]
) -> None:
    """(a) A 0600 file of the master's user: none of its lines reaches any output; it is never opened."""
    secret = tmp_path / "secret.conf"
    secret.write_text("SECRET-LINE-1 password=hunter2\nSECRET-LINE-2\nSECRET-LINE-3\n")
    secret.chmod(0o600)
    watch(str(secret), False)
    outputs = Outputs(tmp_path, path)
    try:
        with forklog.Hub(outputs.sinks) as hub:
            in_child(lambda: log_with_frames_naming(hub, str(secret)))
            another_worker_is_heard(hub, outputs)
            texts = outputs.texts()
            stats = hub.stop(timeout=10)
    finally:
        outputs.close()
    assert stats is not None and stats.bad_records == 0
    for text in texts:
        assert f'File "{secret}", line 1, in ' in text, "the hostile record is written, frames and all"
        assert "SECRET-LINE" not in text
    assert OPENED == []
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600


@pytest.mark.parametrize("path", PATHS)
def test_frames_naming_a_fifo_do_not_block_the_listener(
    tmp_path: Path, path: str, watch: Callable[[str, bool], None]
) -> None:
    """(b) A FIFO nobody writes: the listener goes on, the next worker's record is written within a second."""
    fifo = tmp_path / "pipe.py"
    os.mkfifo(fifo)
    watch(str(fifo), False)
    outputs = Outputs(tmp_path, path)
    try:
        with forklog.Hub(outputs.sinks) as hub:
            try:
                in_child(lambda: log_with_frames_naming(hub, str(fifo)))
                another_worker_is_heard(hub, outputs)
            finally:
                unblock(fifo)  # else a master that opened it would never stop
            texts = outputs.texts()
            stats = hub.stop(timeout=10)
    finally:
        outputs.close()
    assert stats is not None and stats.bad_records == 0
    for text in texts:
        assert f'File "{fifo}", line 1, in ' in text
        assert "FIFO-LINE" not in text
    assert OPENED == []


@pytest.mark.parametrize("path", PATHS)
def test_frames_naming_dev_zero_read_nothing(
    tmp_path: Path, path: str, watch: Callable[[str, bool], None]
) -> None:
    """(c) ``/dev/zero``: never opened (the test refuses the open, or it would read until memory ran out)."""
    watch("/dev/zero", True)
    outputs = Outputs(tmp_path, path)
    try:
        with forklog.Hub(outputs.sinks) as hub:
            peak = PeakRss()
            in_child(lambda: log_with_frames_naming(hub, "/dev/zero"))
            another_worker_is_heard(hub, outputs)
            grown = peak.growth()
            texts = outputs.texts()
            stats = hub.stop(timeout=10)
    finally:
        outputs.close()
    assert grown < 16 << 20, f"the master grew by {grown >> 20} MiB"
    assert stats is not None and stats.bad_records == 0
    for text in texts:
        assert 'File "/dev/zero", line 1, in ' in text
        assert "\0" not in text
    assert OPENED == [], "the master opened /dev/zero"


@pytest.mark.parametrize("path", PATHS)
def test_frames_of_another_shape_are_counted_undecodable(tmp_path: Path, path: str) -> None:
    """A frame whose line number is text: the record is skipped and counted, the listener goes on."""
    outputs = Outputs(tmp_path, path)

    def attack() -> None:
        forklog.init_worker(hub.queue)
        real = tracebacks.extract

        def hostile(value: BaseException) -> Any:
            chain = real(value)
            assert chain is not None
            return [(n, m, [(f[0], "one", *f[2:]) for f in fs], via) for n, m, fs, via in chain]

        tracebacks.extract = hostile
        try:
            a()
        except ValueError:
            logging.getLogger("hostile").exception("the malformed record")
        assert hub.queue.leave(timeout=1.0)

    try:
        with forklog.Hub(outputs.sinks) as hub:
            in_child(attack)
            another_worker_is_heard(hub, outputs)
            texts = outputs.texts()
            stats = hub.stop(timeout=10)
    finally:
        outputs.close()
    assert stats is not None and stats.bad_records == 1
    assert stats.listener_faults == 0
    for text in texts:
        assert "the malformed record" not in text


# -- what still works -------------------------------------------------------------

#: A file that exists only in the worker's linecache: what the master writes of it came from the worker.
WORKER_ONLY = "/nonexistent/forklog-worker-only/app.py"
WORKER_ONLY_SOURCE = "def handler():\n    raise KeyError('worker-only source line')\n"


@pytest.mark.parametrize("path", PATHS)
def test_a_normal_traceback_shows_the_source_lines_the_worker_sent(
    tmp_path: Path, path: str, watch: Callable[[str, bool], None]
) -> None:
    """A real exception: the traceback module's text, source lines included, every one from the worker."""
    watch(WORKER_ONLY, False)
    watch(__file__, False)
    outputs = Outputs(tmp_path, path)

    def log() -> None:
        forklog.init_worker(hub.queue)
        lines = WORKER_ONLY_SOURCE.splitlines(True)
        linecache.cache[WORKER_ONLY] = (len(WORKER_ONLY_SOURCE), None, lines, WORKER_ONLY)
        namespace: dict[str, Any] = {}
        exec(compile(WORKER_ONLY_SOURCE, WORKER_ONLY, "exec"), namespace)
        try:
            a()
        except ValueError:
            try:
                namespace["handler"]()
            except KeyError:
                logging.getLogger("app").exception("request failed")
        assert hub.queue.leave(timeout=1.0)

    try:
        with forklog.Hub(outputs.sinks) as hub:
            in_child(log)
            wait_for(lambda: outputs.written("request failed"), 5.0, "the record")
            texts = outputs.texts()
            stats = hub.stop(timeout=10)
    finally:
        outputs.close()
    assert stats is not None and stats.bad_records == 0
    for text in texts:
        assert f'  File "{__file__}", line ' in text
        assert '    raise ValueError("hostile frames")\n' in text, "a source line of this file"
        assert "During handling of the above exception, another exception occurred:" in text
        assert f'  File "{WORKER_ONLY}", line 2, in handler\n' in text
        assert "    raise KeyError('worker-only source line')\n" in text, "a line only the worker had"
        assert "KeyError: 'worker-only source line'" in text
    assert OPENED == [], "the master read a source file"
