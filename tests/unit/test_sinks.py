"""The rotating file sink the shipped config uses."""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import gzip
import logging
import os
import resource
import signal
import threading
import time
from pathlib import Path
from typing import Iterator, List, Optional

import pytest

import forklog
from forklog._master.rotation import next_rollover
from tests.support import wait_for


def record(msg: str) -> logging.LogRecord:
    return logging.makeLogRecord({"msg": msg})


def sink_at(path: Path, **kwargs: object) -> forklog.RotatingFileSink:
    sink = forklog.RotatingFileSink(path, **kwargs)  # type: ignore[arg-type]
    sink.setFormatter(logging.Formatter("%(message)s"))
    return sink


def backup_number(path: Path) -> int:
    """app.log -> 0, app.log.3 -> 3, app.log.3.gz -> 3."""
    suffix = path.name.split(".log", 1)[1].removesuffix(".gz").lstrip(".")
    return int(suffix) if suffix.isdigit() else 0


def all_lines(log: Path) -> List[str]:
    """Every line of the log and its backups (gunzipped), oldest file first."""
    files = [p for p in log.parent.glob(log.name + "*") if not p.name.endswith((".lock", ".tmp"))]
    lines: List[str] = []
    for path in sorted(files, key=lambda p: -backup_number(p)):
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        lines += data.decode().splitlines()
    return lines


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


@contextlib.contextmanager
def rotation_lock(log: Path) -> Iterator[None]:
    """Hold the flock the sink rotates under (and its compressor finishes under)."""
    with open(str(log) + ".lock", "a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def is_open_here(path: Path) -> bool:
    """Whether this process has ``path`` open (the compressor reading it)."""
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/self/fd/{fd}") == str(path):
                return True
    return False


def write_big(path: Path, megabytes: int) -> int:
    """A file of random hex lines (slow to gzip); returns its line count."""
    lines = [os.urandom(4096).hex() for _ in range(megabytes * 128)]
    path.write_text("\n".join(lines) + "\n")
    return len(lines)


# -- size rotation (the original behaviour) ---------------------------------------


def test_rotates_by_counted_size_and_keeps_every_line(tmp_path: Path) -> None:
    """Lines go to the current file until the next would pass maxBytes; none is lost or split."""
    path = tmp_path / "app.log"
    path.write_text("x" * 100 + "\n")  # an existing file counts from its size
    sink = forklog.RotatingFileSink(path, maxBytes=1000, backupCount=20)
    sink.setFormatter(logging.Formatter("%(message)s"))
    for i in range(100):
        sink.emit(record(f"line {i:03d} " + "y" * 40))
    sink.close()
    lines = all_lines(path)
    assert lines[0] == "x" * 100
    assert lines[1:] == [f"line {i:03d} " + "y" * 40 for i in range(100)]
    files = list(tmp_path.glob("app.log*"))
    assert all(f.stat().st_size <= 1000 for f in files)
    assert len(files) > 5


@pytest.mark.parametrize("existing", ["", "x" * 10 + "\n"])
def test_a_batch_of_lines_rotates_where_single_lines_would(tmp_path: Path, existing: str) -> None:
    """Lines made by the workers, a batch at a time: even the first batch into an empty file rotates."""
    path = tmp_path / "app.log"
    path.write_text(existing)
    sink = forklog.RotatingFileSink(path, maxBytes=100, backupCount=20)
    expected = [f"line {i:03d}" for i in range(60)]
    for start in range(0, 60, 30):
        assert sink.emit_lines([line.encode() for line in expected[start : start + 30]]) == 0
    sink.close()
    assert all_lines(path) == existing.splitlines() + expected
    assert all(f.stat().st_size <= 100 for f in tmp_path.glob("app.log*"))


def test_through_a_hub(tmp_path: Path) -> None:
    """With the hub flushing once per batch, every record is on disk after stop()."""
    path = tmp_path / "hub.log"
    sink = forklog.RotatingFileSink(path, maxBytes=0)
    sink.setFormatter(forklog.TextFormatter("%(levelname)s %(message)s"))
    with forklog.Hub([sink]) as hub:
        logger = logging.getLogger("sinks")
        logger.propagate = False
        logger.addHandler(hub.handler())
        logger.setLevel(logging.INFO)
        for i in range(1000):
            logger.info("record %d", i)
    assert path.read_text().splitlines() == [f"INFO record {i}" for i in range(1000)]


def test_two_sinks_sharing_a_file_rotate_it_once(tmp_path: Path) -> None:
    """A second process's rotation, after the first one's, reopens the fresh file instead of rotating it."""
    path = tmp_path / "app.log"
    first, second = sink_at(path, backupCount=5), sink_at(path, backupCount=5)
    first.emit(record("old 1"))
    second.emit(record("old 2"))
    first.doRollover()
    first.emit(record("new 1"))
    second.doRollover()  # its file is app.log.1 now: not its to rotate again
    second.emit(record("new 2"))
    first.close()
    second.close()
    assert not (tmp_path / "app.log.2").exists()
    assert (tmp_path / "app.log.1").read_text().splitlines() == ["old 1", "old 2"]
    assert path.read_text().splitlines() == ["new 1", "new 2"]


# -- permissions --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "mask", "expected"),
    [
        (None, 0o022, 0o640),  # the default, under the common umask
        (None, 0o000, 0o640),  # and under none: never world-readable
        (0o600, 0o000, 0o600),
        (0o664, 0o027, 0o640),
        (0o644, 0o000, 0o644),
    ],
)
@pytest.mark.parametrize("compress", [False, True])
def test_files_are_created_with_the_mode_the_umask_allows(
    tmp_path: Path, mode: Optional[int], mask: int, expected: int, compress: bool
) -> None:
    """Every file it makes (log, lock, rotated, .gz) gets mode= (0640 by default) less the umask's bits."""
    path = tmp_path / "app.log"
    options = {} if mode is None else {"mode": mode}
    with umask(mask):
        sink = sink_at(path, maxBytes=100, backupCount=3, compress=compress, **options)
        for i in range(10):
            sink.emit(record(f"line {i} " + "z" * 30))
        sink.close()
    suffix = ".gz" if compress else ""
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["app.log", *(f"app.log.{n}{suffix}" for n in (1, 2, 3)), "app.log.lock"]
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in tmp_path.iterdir()}
    assert modes == dict.fromkeys(names, oct(expected))


# -- time rotation ------------------------------------------------------------------


def test_next_rollover_for_each_unit() -> None:
    """'S', 'M', 'H', 'D' count from now; 'midnight' is the interval-th next midnight, UTC or local."""
    now = datetime.datetime(2024, 3, 10, 15, 30, 5, tzinfo=datetime.UTC).timestamp()
    assert next_rollover(now, "S", 5, False) == now + 5
    assert next_rollover(now, "M", 2, False) == now + 120
    assert next_rollover(now, "H", 3, False) == now + 3 * 3600
    assert next_rollover(now, "D", 1, False) == now + 86400
    utc = datetime.UTC
    assert next_rollover(now, "MIDNIGHT", 1, True) == datetime.datetime(2024, 3, 11, tzinfo=utc).timestamp()
    assert next_rollover(now, "MIDNIGHT", 2, True) == datetime.datetime(2024, 3, 12, tzinfo=utc).timestamp()
    local = datetime.datetime.fromtimestamp(next_rollover(now, "MIDNIGHT", 1, False))
    assert local.time() == datetime.time(0)
    assert local.date() == datetime.datetime.fromtimestamp(now).date() + datetime.timedelta(days=1)
    with pytest.raises(ValueError, match="when='W9'"):
        forklog.RotatingFileSink("/nonexistent/app.log", when="W9")


def test_rotates_when_the_period_ends(tmp_path: Path) -> None:
    """when='S': the record after the second is over opens a new file; the schedule moves on."""
    path = tmp_path / "app.log"
    sink = sink_at(path, when="S", interval=1, backupCount=3)
    sink.emit(record("first"))
    due = sink.rollover_at
    assert due is not None
    wait_for(lambda: time.time() >= due, 5, "the end of the period")
    sink.emit(record("second"))
    assert sink.rollover_at is not None and sink.rollover_at > due
    sink.close()
    assert (tmp_path / "app.log.1").read_text() == "first\n"
    assert path.read_text() == "second\n"


def test_a_file_older_than_its_period_rotates_at_the_first_record(tmp_path: Path) -> None:
    """After a restart past midnight the old file rotates before the first new line; a fresh one does not."""
    old, fresh = tmp_path / "old.log", tmp_path / "fresh.log"
    for path in (old, fresh):
        path.write_text("before\n")
    two_days_ago = time.time() - 2 * 86400
    os.utime(old, (two_days_ago, two_days_ago))
    for path in (old, fresh):
        sink = sink_at(path, when="midnight", backupCount=3)
        sink.emit(record("after"))
        sink.close()
    assert (tmp_path / "old.log.1").read_text() == "before\n"
    assert old.read_text() == "after\n"
    assert not (tmp_path / "fresh.log.1").exists()
    assert fresh.read_text() == "before\nafter\n"


def test_size_and_time_triggers_together(tmp_path: Path) -> None:
    """A time rotation, then size rotations that leave the time schedule alone; every line kept in order."""
    path = tmp_path / "app.log"
    path.write_text("yesterday\n")
    long_ago = time.time() - 7200
    os.utime(path, (long_ago, long_ago))
    sink = sink_at(path, maxBytes=200, backupCount=50, when="H")
    sink.emit(record("line 000"))  # the hour is over: rotates by time first
    assert (tmp_path / "app.log.1").read_text() == "yesterday\n"
    due = sink.rollover_at
    assert due is not None and due > time.time() + 3500
    for i in range(1, 100):
        sink.emit(record(f"line {i:03d}"))
    sink.close()
    assert sink.rollover_at == due
    assert len(list(tmp_path.glob("app.log.*[0-9]"))) > 3
    assert all_lines(path) == ["yesterday"] + [f"line {i:03d}" for i in range(100)]


# -- compression --------------------------------------------------------------------


def test_compression_runs_beside_the_writer(tmp_path: Path) -> None:
    """doRollover returns before a multi-MB backup is gzipped, and records keep being written meanwhile."""
    path = tmp_path / "app.log"
    big = write_big(path, 8)
    sink = sink_at(path, backupCount=3, compress=True)
    started = time.monotonic()
    sink.doRollover()
    returned_after = time.monotonic() - started
    assert not (tmp_path / "app.log.1.gz").exists(), "doRollover waited for gzip"
    assert (tmp_path / "app.log.1").exists() and sink.compressing
    with rotation_lock(path):  # the compressor cannot finish while the test holds the lock
        for i in range(1000):
            sink.emit(record(f"meanwhile {i}"))
        assert path.read_text().splitlines() == [f"meanwhile {i}" for i in range(1000)]
        assert sink.compressing and not (tmp_path / "app.log.1.gz").exists()
    wait_for((tmp_path / "app.log.1.gz").exists, 60, "the .gz")
    assert not (tmp_path / "app.log.1").exists()
    assert returned_after < 0.5
    sink.close()
    assert len(gzip.decompress((tmp_path / "app.log.1.gz").read_bytes()).splitlines()) == big


def test_backups_shift_with_gz_names(tmp_path: Path) -> None:
    """app.log.1.gz is the newest backup, app.log.<backupCount>.gz the oldest; older ones go."""
    path = tmp_path / "app.log"
    sink = sink_at(path, backupCount=3, compress=True)
    for generation in range(1, 6):
        sink.emit(record(f"generation {generation}"))
        sink.doRollover()
        assert sink.wait_compressed(30)
    sink.emit(record("generation 6"))
    sink.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["app.log", "app.log.1.gz", "app.log.2.gz", "app.log.3.gz", "app.log.lock"]
    contents = {n: gzip.decompress((tmp_path / n).read_bytes()) for n in names if n.endswith(".gz")}
    assert contents == {
        "app.log.1.gz": b"generation 5\n",
        "app.log.2.gz": b"generation 4\n",
        "app.log.3.gz": b"generation 3\n",
    }


def test_a_backup_renamed_while_compressed_gets_its_gz_under_the_new_name(tmp_path: Path) -> None:
    """Another process shifting app.log.1 to app.log.2 mid-gzip: the .gz is app.log.2.gz, nothing is lost."""
    path = tmp_path / "app.log"
    big = write_big(path, 8)
    sink = sink_at(path, backupCount=5, compress=True)
    sink.doRollover()
    sink.emit(record("current"))
    wait_for(lambda: is_open_here(tmp_path / "app.log.1"), 10, "the compressor to open app.log.1")
    with rotation_lock(path):  # rotating as a process sharing the file would
        assert sink.compressing and not (tmp_path / "app.log.1.gz").exists()
        os.replace(tmp_path / "app.log.1", tmp_path / "app.log.2")
    assert sink.wait_compressed(60)
    sink.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.log", "app.log.2.gz", "app.log.lock"]
    assert len(gzip.decompress((tmp_path / "app.log.2.gz").read_bytes()).splitlines()) == big
    assert path.read_text() == "current\n"


def test_no_line_lost_across_rotations_and_compression(tmp_path: Path) -> None:
    """Rotating faster than gzip keeps up (backups renamed while compressed) loses and repeats nothing."""
    path = tmp_path / "app.log"
    sink = sink_at(path, maxBytes=20_000, backupCount=1000, compress=True)
    for i in range(30_000):
        sink.emit(record(f"line {i:05d} " + "p" * 20))
    sink.close()
    backups = [p.name for p in tmp_path.glob("app.log.*[0-9]*") if p.suffix != ".lock"]
    assert len(backups) > 40
    assert all(name.endswith(".gz") for name in backups), "close() left a backup uncompressed"
    assert all_lines(path) == [f"line {i:05d} " + "p" * 20 for i in range(30_000)]


def test_close_waits_for_compression_but_not_forever(tmp_path: Path) -> None:
    """close() returns once a running gzip is done, or after close_timeout when it cannot finish."""
    path = tmp_path / "app.log"
    write_big(path, 4)
    sink = sink_at(path, backupCount=3, compress=True)
    sink.doRollover()
    sink.close()
    assert (tmp_path / "app.log.1.gz").exists() and not (tmp_path / "app.log.1").exists()

    other = tmp_path / "other.log"
    write_big(other, 8)
    stuck = sink_at(other, backupCount=3, compress=True)
    stuck.close_timeout = 0.5
    stuck.doRollover()
    with rotation_lock(other):  # the compressor cannot finish while the test holds the lock
        started = time.monotonic()
        stuck.close()
        took = time.monotonic() - started
        assert stuck.compressing and not (tmp_path / "other.log.1.gz").exists()
    assert 0.4 < took < 3
    wait_for(lambda: not stuck.compressing, 30, "the compression to end")
    assert (tmp_path / "other.log.1.gz").exists()


def test_a_forked_child_has_no_compressor(tmp_path: Path) -> None:
    """A child forked during a compression neither waits for it nor touches the parent's backups."""
    path = tmp_path / "app.log"
    write_big(path, 8)
    sink = sink_at(path, backupCount=3, compress=True)
    sink.close_timeout = 5
    sink.doRollover()
    with rotation_lock(path):  # the parent's compressor cannot finish while the test holds the lock
        assert sink.compressing
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                started = time.monotonic()
                alone = threading.active_count() == 1 and not sink.compressing
                sink.close()
                code = 0 if alone and time.monotonic() - started < 1 else 3
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert (tmp_path / "app.log.1").exists() and not (tmp_path / "app.log.1.gz").exists()
    wait_for((tmp_path / "app.log.1.gz").exists, 30, "the parent's .gz")
    sink.close()
    assert not (tmp_path / "app.log.1").exists()


# -- faults, on the sink alone (through a hub: tests/integration/test_sink_faults.py) --


def test_a_failed_batch_is_one_error_and_counted(tmp_path: Path) -> None:
    """On a full disk, a batch of 50 held lines is 50 dropped records and one handleError call."""
    path = tmp_path / "full.log"
    path.symlink_to("/dev/full")
    sink = sink_at(path)
    errors: List[logging.LogRecord] = []
    sink.handleError = errors.append  # type: ignore[method-assign,assignment]
    write_batch = sink.flush
    sink.flush = lambda: None  # type: ignore[method-assign]  # as the hub does: one flush per batch
    for i in range(50):
        sink.emit(record(f"line {i}"))
    write_batch()
    assert (sink.dropped, len(errors)) == (50, 1)
    write_batch()  # nothing held: nothing more to report
    assert (sink.dropped, len(errors)) == (50, 1)


def test_an_unopenable_path_does_not_raise_and_heals(tmp_path: Path) -> None:
    """A path that cannot be opened at start: no exception, records counted lost, written once it can."""
    path = tmp_path / "later" / "app.log"
    path.parent.write_text("")  # a file where the directory should be: not even makedirs helps
    sink = sink_at(path)
    errors: List[logging.LogRecord] = []
    sink.handleError = errors.append  # type: ignore[method-assign,assignment]
    for i in range(5):
        sink.emit(record(f"lost {i}"))
    assert sink.dropped == 5 and len(errors) == 5
    path.parent.unlink()
    path.parent.mkdir()
    sent = 0

    def written() -> bool:
        nonlocal sent
        sink.emit(record(f"probe {sent}"))
        sent += 1
        return path.exists()

    wait_for(written, 5, "the file to be created")
    sink.close()
    assert path.read_text().splitlines() == [f"probe {sent - 1}"]
    assert sink.dropped == 5 + sent - 1


def test_a_partial_write_loses_only_the_lines_it_cut(tmp_path: Path) -> None:
    """A write cut short (a file size limit, like a disk filling up) counts just the lines it cut."""
    path = tmp_path / "app.log"
    lines = [f"line {i:02d} " + "q" * 20 for i in range(50)]  # 29 bytes each
    pid = os.fork()
    if pid == 0:  # the limit is per process: set it in a child
        code = 1
        try:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
            resource.setrlimit(resource.RLIMIT_FSIZE, (1000, hard))
            sink = sink_at(path)
            errors: List[logging.LogRecord] = []
            sink.handleError = errors.append  # type: ignore[method-assign,assignment]
            write_batch, sink.flush = sink.flush, lambda: None  # type: ignore[method-assign]
            for line in lines:
                sink.emit(record(line))
            write_batch()  # 1000 bytes go in: 34 whole lines and 14 bytes of the 35th
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
            sink.emit(record("next batch"))
            write_batch()
            code = 0 if (sink.dropped, len(errors)) == (16, 1) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "dropped or errors miscounted"
    assert path.read_text().splitlines() == [*lines[:34], lines[34][:14], "next batch"]
