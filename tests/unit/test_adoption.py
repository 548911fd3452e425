"""Adoption in one process: which handlers, the target's checks, unrouted records, a stopped hub."""

from __future__ import annotations

import contextlib
import io
import logging
import logging.handlers
import multiprocessing
import os
import socket
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest

import forklog
from forklog._master.targets import Credentials
from forklog._wire import adopted_lines as _target
from forklog._worker import adoption
from tests.support import Collect, in_child, wait_for

NOBODY = Credentials(65534, frozenset({65534}))


@pytest.fixture
def loggers() -> Iterator[logging.Logger]:
    """A logger of the test's own, with no handler left behind."""
    log = logging.getLogger("adoption.test")
    log.propagate = False
    log.setLevel(logging.DEBUG)
    yield log
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()
    adoption.detach()


class OwnEmit(logging.FileHandler):
    def emit(self, record: logging.LogRecord) -> None:  # a handler of the app's own making
        super().emit(record)


def test_spec_of_adopts_files_and_standard_streams_only(tmp_path: Path) -> None:
    """The stdlib's file handlers and StreamHandler on stdout/stderr have a target; others stay."""
    path = str(tmp_path / "a.log")
    cases: List[Tuple[logging.Handler, str]] = [
        (logging.FileHandler(path, delay=True), "file"),
        (logging.handlers.RotatingFileHandler(path, maxBytes=10, backupCount=2, delay=True), "rotating"),
        (logging.handlers.TimedRotatingFileHandler(path, when="midnight", delay=True), "timed"),
        (logging.handlers.WatchedFileHandler(path, delay=True), "watched"),
        (logging.StreamHandler(sys.stderr), "stream"),
        (logging.StreamHandler(sys.stdout), "stream"),
    ]
    for handler, kind in cases:
        spec = _target.spec_of(handler)
        assert spec is not None and spec.kind == kind, handler
        assert _target.TargetSpec.from_bytes(spec.to_bytes()) == spec
    rotating = _target.spec_of(cases[1][0])
    assert rotating is not None and (rotating.max_bytes, rotating.backup_count) == (10, 2)
    with socket.socket() as smtp_server:  # where the SMTPHandler would connect to send a mail
        smtp_server.bind(("127.0.0.1", 0))
        smtp_server.listen(1)
        others: Tuple[logging.Handler, ...] = (
            OwnEmit(path, delay=True),
            logging.StreamHandler(io.StringIO()),
            logging.handlers.SMTPHandler(smtp_server.getsockname(), "a@b", ["c@d"], "s", timeout=1.0),
            logging.NullHandler(),
        )
        for other in others:
            assert _target.spec_of(other) is None, other
        smtp_server.setblocking(False)
        with contextlib.suppress(BlockingIOError):  # no connection waits to be accepted
            smtp_server.accept()[0].close()
            pytest.fail("the SMTPHandler connected: a mail was sent")


@pytest.mark.parametrize(
    "values",
    [
        ("exec", "/tmp/x", "a", None, None, 0, 0, "h", 1, False, None),
        ("file", "relative.log", "a", None, None, 0, 0, "h", 1, False, None),
        ("file", "/tmp/x", "r+", None, None, 0, 0, "h", 1, False, None),
        ("stream", "/dev/tty", "a", None, None, 0, 0, "h", 1, False, None),
        ("file", "/tmp/x", "a", None, "surrogatepass", 0, 0, "h", 1, False, None),
        ("timed", "/tmp/x", "a", None, None, 0, 0, "h", 1, False, 90_000),
    ],
)
def test_a_target_from_the_pipe_is_plain_checked_data(values: tuple) -> None:  # type: ignore[type-arg]
    """A kind off the allow-list, a relative path, a bad mode, errors or time: refused when read."""
    with pytest.raises(ValueError):
        _target.TargetSpec.from_bytes(_target.TargetSpec(*values).to_bytes())


def test_a_hostile_spec_costs_only_its_length() -> None:
    """Bytes that are no spec, cut short, too long, or declaring huge sizes: ValueError at once."""
    good = _target.TargetSpec("file", "/tmp/x.log").to_bytes()
    for data in (b"", b"\x00" * 5, good[:-1], good + b"x", b"\xff" * 40, good[:21] + b"\xfe\xff" + b"x" * 10):
        with pytest.raises(ValueError):
            _target.TargetSpec.from_bytes(data)
    with pytest.raises(ValueError):
        _target.TargetSpec.from_bytes(b"x" * (_target.MAX_SPEC_BYTES + 1))


def test_adopted_handler_writes_through_the_hub(tmp_path: Path, loggers: logging.Logger) -> None:
    """A FileHandler added after attach keeps its level and formatter; the hub's owner writes its file."""
    path = tmp_path / "own.log"
    with forklog.Hub([Collect()]) as hub:
        adoption.attach(hub.queue)
        handler = logging.FileHandler(path)
        handler.setLevel(logging.INFO)
        handler.setFormatter(logging.Formatter("{levelname}:{message}", style="{"))
        loggers.addHandler(handler)
        assert handler.stream is None, "the handler still holds its file"
        loggers.debug("below the handler's level")
        loggers.info("one")
        loggers.warning("two \udc80 surrogate")
        stats = hub.stop()
    assert stats is not None and stats.written[str(path)] == 2
    assert path.read_text() == "INFO:one\nWARNING:two \\udc80 surrogate\n"


def test_across_users_the_master_opens_no_file_a_writer_names(
    tmp_path: Path, loggers: logging.Logger
) -> None:
    """With writers of another user, a file target asked for through the pipe is refused and counted."""
    target = tmp_path / "anywhere.log"
    with forklog.Hub([Collect()]) as hub:
        hub.targets.writer = NOBODY
        # As a compromised worker would: a file target straight into the pipe, whatever its own rights.
        spec = _target.TargetSpec("file", str(target)).to_bytes()
        record = logging.makeLogRecord({"msg": "x", "levelno": logging.INFO, "levelname": "INFO"})
        for _ in range(5):
            assert hub.queue.send_text(spec, record, "forged line", "\n")
        wait_for(lambda: hub.stats().dropped_by_sink.get(str(target)) == 5, 10, "the refusals counted")
        stats = hub.stop()
    assert stats is not None and not target.exists()


def test_unrouted_records_are_counted_and_reported_once(loggers: logging.Logger) -> None:
    """Records no sink takes (every level above theirs) are counted, and the log says so once."""
    collect = Collect(logging.WARNING)
    with forklog.Hub([collect]) as hub:
        loggers.addHandler(forklog.ForkHandler(hub.queue))
        for i in range(7):
            loggers.info("nobody wants %d", i)
        wait_for(lambda: hub.stats().unrouted == 7, 10, "the unrouted count")
        wait_for(lambda: any("no sink took them" in m for m in collect.messages()), 10, "the report")
        hub.stop()
    assert sum("no sink took them" in m for m in collect.messages()) == 1


SCRIPT = """
import logging, sys
import forklog
from forklog._worker import adoption

hub = forklog.Hub([logging.StreamHandler(sys.stdout)]).start()
forklog.init_worker(hub.queue)
logging.getLogger("x").warning("before the stop")
handler = logging.FileHandler(sys.argv[1])
handler.setFormatter(logging.Formatter("adopted %(message)s"))
logging.getLogger("own").addHandler(handler)
hub.stop()
logging.getLogger("x").warning("after the stop")
logging.getLogger("own").warning("adopted after the stop")
"""


def test_after_stop_records_go_to_stderr_and_exit_is_clean(tmp_path: Path) -> None:
    """Once the hub has stopped, records go to stderr as logging.lastResort would; no traceback at exit."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SCRIPT), str(tmp_path / "own.log")],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert result.returncode == 0, result.stderr
    assert "before the stop" in result.stdout
    assert "after the stop" in result.stderr and "adopted adopted after the stop" in result.stderr
    assert "Traceback" not in result.stderr


FILE_CONFIG = """
[loggers]
keys=root,jobs

[handlers]
keys=timed,watched

[formatters]
keys=plain

[logger_root]
level=INFO
handlers=timed

[logger_jobs]
level=INFO
handlers=watched
qualname=adoption.jobs
propagate=0

[handler_timed]
class=logging.handlers.TimedRotatingFileHandler
args=({timed!r}, 'midnight', 1, 3)
formatter=plain

[handler_watched]
class=logging.handlers.WatchedFileHandler
args=({watched!r},)
formatter=plain

[formatter_plain]
format=%(name)s %(message)s
"""


def test_fileconfig_handlers_are_adopted(tmp_path: Path) -> None:
    """fileConfig's TimedRotatingFileHandler and WatchedFileHandler: the hub writes each record once."""
    import logging.config

    timed, watched = tmp_path / "timed.log", tmp_path / "watched.log"
    ini = tmp_path / "logging.ini"
    ini.write_text(FILE_CONFIG.format(timed=str(timed), watched=str(watched)))
    root = logging.getLogger()
    saved = list(root.handlers), root.level
    try:
        with forklog.Hub([Collect()]) as hub:
            adoption.attach(hub.queue)
            logging.config.fileConfig(ini, disable_existing_loggers=False)
            logging.getLogger("adoption.other").info("to root")
            logging.getLogger("adoption.jobs").info("to jobs")
            stats = hub.stop()
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])
        jobs = logging.getLogger("adoption.jobs")
        for handler in list(jobs.handlers):
            jobs.removeHandler(handler)
        jobs.propagate = True
    assert stats is not None
    assert timed.read_text() == "adoption.other to root\n"
    assert watched.read_text() == "adoption.jobs to jobs\n"
    assert stats.written[str(timed)] == 1 and stats.written[str(watched)] == 1


def test_a_hub_sink_on_a_logger_too_is_not_adopted(tmp_path: Path, loggers: logging.Logger) -> None:
    """A handler given to the hub and also put on a logger stays the listener's: its records are written."""
    path = tmp_path / "both.log"
    sink = logging.FileHandler(path)
    loggers.addHandler(sink)  # the app's logger has it too
    with forklog.Hub([sink]) as hub:
        forklog.init_worker(hub.queue)  # the README's pool parent: attached
        logging.getLogger("adoption.other").warning("via the hub")
        stats = hub.stop()
    assert stats is not None and stats.feedback == 0
    assert path.read_text() == "via the hub\n"


def test_a_truncated_adopted_line_keeps_its_terminator(tmp_path: Path, loggers: logging.Logger) -> None:
    """An adopted line cut to max_record_bytes still ends its line: the next record starts a new one."""
    path = tmp_path / "cut.log"
    with forklog.Hub([Collect()], max_record_bytes=4096) as hub:
        adoption.attach(hub.queue)
        loggers.addHandler(logging.FileHandler(path))
        loggers.info("x" * 10_000)
        loggers.info("next record")
        hub.stop()
    first, second = path.read_text().split("\n")[:2]
    assert first.endswith("]") and "truncated" in first and second == "next record"


def test_a_basicconfig_that_raises_leaves_the_hubs_handler(tmp_path: Path) -> None:
    """basicConfig(filename=...) that cannot open its file raises as usual; root keeps the hub's handler."""
    root = logging.getLogger()
    with forklog.Hub([Collect()]) as hub:
        handler = forklog.init_worker(hub.queue)
        with pytest.raises(OSError):
            logging.basicConfig(filename=str(tmp_path / "no" / "such" / "dir" / "x.log"))
        assert root.handlers == [handler]
        hub.stop()


def test_a_handler_pointed_elsewhere_writes_there(tmp_path: Path) -> None:
    """Issue 22, item 2: a new ``baseFilename`` then ``close()``, or ``setStream()``, as the stdlib does it.

    The adopted file handler's lines follow its new name through the master;
    a stream handler given a stream the master cannot write (a ``StringIO``)
    is given back its own ``emit`` and writes it itself.
    """
    first, second, seen = tmp_path / "first.log", tmp_path / "second.log", tmp_path / "seen"

    def child() -> None:
        forklog.init_worker(hub.queue)
        files = logging.FileHandler(first)
        files.setFormatter(logging.Formatter("%(message)s"))
        log = logging.getLogger("moved")
        log.addHandler(files)
        log.warning("to the first")
        files.baseFilename = str(second)
        files.close()
        log.warning("to the second")
        stream = logging.StreamHandler(sys.stderr)
        log.addHandler(stream)
        buffer = io.StringIO()
        stream.setStream(buffer)
        log.warning("to the buffer")
        seen.write_text(f"{adoption.adopted(stream)} {buffer.getvalue()!r}")
        hub.queue.leave(timeout=1.0)

    with forklog.Hub([Collect()]) as hub:
        in_child(child)
    assert first.read_text() == "to the first\n"
    assert second.read_text() == "to the second\nto the buffer\n"
    assert seen.read_text() == "None 'to the buffer\\n'"


def _basic_job(index: int) -> int:
    """A pool job configuring logging as a small script does: basicConfig(level, format), stderr."""
    logging.basicConfig(level=logging.INFO, format="BASIC %(levelname)s %(message)s")
    log = logging.getLogger("basic.job")
    for i in range(20):
        log.info("job=%d i=%d", index, i)
        log.debug("job=%d hidden", index)
    return os.getpid()


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_basicconfig_in_a_pool_child_prints_what_the_stdlib_prints(
    method: str, capfd: pytest.CaptureFixture[str]
) -> None:
    """Issue 22, item 1, in a pool child: basicConfig's lines on stderr, once, and none in the hub's sinks."""
    ctx = multiprocessing.get_context(method)

    def basic_lines() -> Counter[str]:
        return Counter(line for line in capfd.readouterr().err.splitlines() if line.startswith("BASIC "))

    capfd.readouterr()
    with ctx.Pool(2) as pool:
        pool.map(_basic_job, range(10), chunksize=1)
    plain = basic_lines()
    collect = Collect()
    with forklog.Hub([collect]) as hub:
        with ctx.Pool(2, initializer=forklog.init_worker, initargs=(hub.queue,)) as pool:
            pool.map(_basic_job, range(10), chunksize=1)
            pool.close()
            pool.join()
        hub.stop()
    forked = basic_lines()
    assert len(plain) == 200 and set(plain.values()) == {1}, plain
    assert forked == plain
    assert not [r for r in collect.records if r.name == "basic.job"], (
        "the app's records reached the hub's sinks"
    )
