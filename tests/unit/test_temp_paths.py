"""Temporary files are made beside their target, exclusively, never through a planted symlink.

The master (often root) used to write the Prometheus file through
``<file>.<pid>.tmp`` and a gzipped backup through ``<log>.gz-<inode>-<pid>.tmp``:
names another user can guess, opened following symlinks, so a symlink planted
there made the master truncate and overwrite the file it pointed to.
"""

from __future__ import annotations

import gzip
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import forklog
from tests.support import Collect, wait_for


@dataclass(frozen=True)
class Sentinel:
    """A root-only file elsewhere that a planted symlink points to, and what it must keep."""

    path: Path
    content: bytes
    inode: int
    mtime_ns: int

    @classmethod
    def make(cls, directory: Path) -> Sentinel:
        directory.mkdir()
        path = directory / "sentinel"
        path.write_bytes(b"precious, root only\n")
        path.chmod(0o600)
        past = 1_000_000_000_000_000_000  # 2001: any write would move it to now
        os.utime(path, ns=(past, past))
        st = path.stat()
        return cls(path, path.read_bytes(), st.st_ino, st.st_mtime_ns)

    def plant(self, link: Path) -> None:
        link.symlink_to(self.path)

    def check(self, link: Path) -> None:
        st = self.path.lstat()
        assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
        assert self.path.read_bytes() == self.content, "the sentinel was written through the symlink"
        assert (st.st_ino, st.st_mtime_ns) == (self.inode, self.mtime_ns)
        assert link.is_symlink(), f"{link.name}: the planted symlink was moved or removed"
        assert os.readlink(link) == str(self.path)


def regular(path: Path) -> os.stat_result:
    st = path.lstat()
    assert stat.S_ISREG(st.st_mode), f"{path.name} is not a regular file"
    return st


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_prometheus_file_ignores_a_symlink_at_the_old_temporary_name(tmp_path: Path) -> None:
    """A symlink at ``<file>.<pid>.tmp`` is left alone; the file it points to keeps content, inode, mtime."""
    out = tmp_path / "textfile"
    out.mkdir()
    path = out / "forklog.prom"
    sentinel = Sentinel.make(tmp_path / "elsewhere")
    link = out / f"forklog.prom.{os.getpid()}.tmp"  # the hub runs in this process: its pid
    sentinel.plant(link)
    collect = Collect()
    hub = forklog.Hub([("collect", collect)], prometheus_file=str(path), stats_interval=0.2).start()
    try:
        logging.getLogger("forklog.test.temp_paths").warning("one record")
        wait_for(
            lambda: path.exists() and "forklog_records_received_total" in path.read_text(),
            10,
            "the Prometheus file",
        )
    finally:
        hub.stop()
    sentinel.check(link)
    st = regular(path)
    assert stat.S_IMODE(st.st_mode) == 0o666 & ~current_umask(), "the mode open(..., 'w') gave it"
    text = path.read_text()
    assert "# TYPE forklog_records_received_total counter" in text
    assert "forklog_listener_up 0" in text.splitlines()  # the last write, at stop()
    assert sorted(p.name for p in out.iterdir()) == sorted([path.name, link.name]), "no temporary left"


def test_prometheus_temporary_is_removed_when_the_rename_fails(tmp_path: Path) -> None:
    """The target is a directory: every write fails at the rename, and no temporary stays behind."""
    target = tmp_path / "forklog.prom"
    target.mkdir()
    hub = forklog.Hub([("collect", Collect())], prometheus_file=str(target), stats_interval=0.1).start()
    hub.stop()  # writes the file once more, synchronously: at least one attempt has failed
    assert [p.name for p in tmp_path.iterdir()] == ["forklog.prom"]
    assert list(target.iterdir()) == []


def test_gzip_ignores_a_symlink_at_the_old_temporary_name(tmp_path: Path) -> None:
    """A symlink at ``<log>.gz-<inode>-<pid>.tmp`` is left alone; the backup is gzipped all the same."""
    logs = tmp_path / "logs"
    logs.mkdir()
    path = logs / "app.log"
    path.write_text("old line\n")
    sentinel = Sentinel.make(tmp_path / "elsewhere")
    # The rotated file keeps its inode: the key the compressor's temporary was named after.
    link = logs / f"app.log.gz-{path.stat().st_ino}-{os.getpid()}.tmp"
    sentinel.plant(link)
    sink = forklog.RotatingFileSink(path, backupCount=3, compress=True, mode=0o640)
    sink.setFormatter(logging.Formatter("%(message)s"))
    try:
        sink.doRollover()
        assert sink.wait_compressed(30)
        sink.emit(logging.makeLogRecord({"msg": "new line"}))
    finally:
        sink.close()
    sentinel.check(link)
    st = regular(logs / "app.log.1.gz")
    assert stat.S_IMODE(st.st_mode) == 0o640 & ~current_umask()
    assert gzip.decompress((logs / "app.log.1.gz").read_bytes()) == b"old line\n"
    names = sorted(p.name for p in logs.iterdir())
    assert names == sorted(["app.log", "app.log.1.gz", "app.log.lock", link.name]), "no temporary left"


def test_prometheus_file_stays_in_the_directory_held_at_start(tmp_path: Path) -> None:
    """The directory swapped for a link to a root-only one after start: nothing is written there."""
    out = tmp_path / "textfile"
    out.mkdir()
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    before = closed.stat()
    hub = forklog.Hub([("collect", Collect())], prometheus_file=str(out / "forklog.prom"), stats_interval=0.1)
    hub.start()
    try:
        wait_for((out / "forklog.prom").exists, 10, "the first Prometheus file")
        first = (out / "forklog.prom").stat().st_ino
        out.rename(tmp_path / "moved")
        out.symlink_to(closed)
        moved = tmp_path / "moved" / "forklog.prom"
        # Each write replaces the file: a new inode is a write made after the swap.
        wait_for(lambda: moved.stat().st_ino != first, 10, "a write in the held directory after the swap")
    finally:
        hub.stop()
    assert list(closed.iterdir()) == [], "the master wrote through the planted directory link"
    assert closed.stat().st_mtime_ns == before.st_mtime_ns
