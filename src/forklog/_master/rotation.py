"""The rotation side of :class:`~forklog._master.sinks.RotatingFileSink`.

* When a time trigger falls due (:func:`next_rollover`).
* How the numbered backups shift, plain or gzipped (:func:`shift_backups`).
* gzip of a rotated file in a background thread (:class:`Compressor`), so
  the listener never waits for it.

Every file is opened, renamed and removed relative to the log's directory,
held open (:class:`forklog._master.log_directory.LogDirectory`), never through
a link. Every rename among the backups happens under the ``flock`` of
``<log>.lock`` (:func:`locked`), opened the same way (the lock an old master
of a USR2 upgrade takes too): the sink's rotation and the compressor's final step exclude
each other, in this process and in another one sharing the file (USR2). A
rotated file is found again by its inode, not its name: a later rotation
may have renamed ``app.log.1`` to ``app.log.2`` while it was being
compressed, and the ``.gz`` must take the name the file has at the end.

Temporary files (the ``.gz`` being written, the Prometheus file) are made by
:func:`create_in`: in the target's held directory, under a random name,
created exclusively and never through a symlink, since the master often runs
as root in a directory another user can write to.
"""

from __future__ import annotations

import collections
import contextlib
import datetime
import fcntl
import gzip
import os
import secrets
import threading
import time
from typing import Callable, Deque, Iterator, List, Optional, Tuple

from forklog._master import scheduling
from forklog._master.log_directory import LogDirectory

__all__ = ["Compressor", "check_when", "create_in", "locked", "next_rollover", "shift_backups"]

#: A file's identity: (st_dev, st_ino).
Key = Tuple[int, int]

_UNITS = {"S": 1, "M": 60, "H": 3600, "D": 86400, "MIDNIGHT": 86400}


def check_when(when: str, interval: int) -> str:
    """``when`` normalised (upper case), or ValueError for a trigger this sink does not know."""
    normal = str(when).upper()
    if normal not in _UNITS:
        raise ValueError(f"RotatingFileSink: when={when!r}: expected one of 'S', 'M', 'H', 'D', 'midnight'")
    if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
        raise ValueError(f"RotatingFileSink: interval={interval!r}: expected a positive integer")
    return normal


def next_rollover(now: float, when: str, interval: int, utc: bool) -> float:
    """The time (``time.time()`` scale) of the next rollover after ``now``.

    'S', 'M', 'H', 'D': ``interval`` units after ``now``. 'MIDNIGHT': the
    ``interval``-th midnight after ``now``, local time (UTC with ``utc``).
    """
    if when != "MIDNIGHT":
        return now + interval * _UNITS[when]
    zone = datetime.UTC if utc else None
    day = datetime.datetime.fromtimestamp(now, zone).date() + datetime.timedelta(days=interval)
    return datetime.datetime.combine(day, datetime.time(0), tzinfo=zone).timestamp()


#: Names tried by :func:`create_in` before it gives up (as ``tempfile.TMP_MAX``).
_CREATE_ATTEMPTS = 100


def create_in(directory: LogDirectory, base: str, tag: str, mode: int) -> Tuple[int, str]:
    """A new file for writing in ``directory``, to be renamed onto ``base``: (fd, name).

    ``<base>.<tag>-<random>.tmp``, beside its target (so the rename stays on
    one file system), created with ``O_EXCL | O_NOFOLLOW`` relative to the
    held directory: a name another user planted (a symlink, a file) is never
    opened, and cannot be guessed in advance. ``mode`` is filtered by the
    umask, as ``open`` does. The caller removes the file if it does not
    rename it.
    """
    for _attempt in range(_CREATE_ATTEMPTS):
        name = f"{base}.{tag}-{secrets.token_hex(8)}.tmp"
        try:
            return directory.create_exclusive(name, mode), name
        except FileExistsError:
            continue
    raise FileExistsError(f"{base}: no free temporary name beside it after {_CREATE_ATTEMPTS} tries")


def key_of(st: os.stat_result) -> Key:
    return (st.st_dev, st.st_ino)


#: The longest the listener waits for another process's rotation lock; then it
#: writes on and tries the rotation again later (a stopped old master under
#: USR2 can hold the lock for good).
LOCK_TIMEOUT = 0.5
#: The gzip thread's bound on the same lock.
COMPRESSOR_LOCK_TIMEOUT = 60.0


@contextlib.contextmanager
def locked(directory: LogDirectory, name: str, mode: int, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """Hold the exclusive ``flock`` of ``name`` that every process sharing the log rotates under.

    The lock file is a regular file of ``directory``, opened (created with
    ``mode``) never through a link. Raises ``TimeoutError`` (an ``OSError``)
    when another process holds it for ``timeout`` seconds.
    """
    fd = directory.open(name, os.O_RDONLY | os.O_CREAT, mode)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"{name}: held by another process for {timeout:g}s") from None
                time.sleep(0.01)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _backups(directory: LogDirectory, base: str) -> List[Tuple[int, str]]:
    """(number, name) of every ``base.N`` and ``base.N.gz`` in the directory."""
    found: List[Tuple[int, str]] = []
    for entry in directory.names():
        if not entry.startswith(base + "."):
            continue
        number = entry[len(base) + 1 :]
        if number.endswith(".gz"):
            number = number[:-3]
        if number.isdigit():
            found.append((int(number), entry))
    return found


def shift_backups(directory: LogDirectory, base: str, count: int) -> List[str]:
    """``base.N`` -> ``base.N+1`` (and the ``.gz`` ones), dropping what passes ``count``.

    Then ``base.1`` is free for the current file. Returns the backups left
    uncompressed (a compression that never finished), under their new names.
    """
    plain: List[str] = []
    for number, name in sorted(_backups(directory, base), reverse=True):
        gz = name.endswith(".gz")
        target = f"{base}.{number + 1}" + (".gz" if gz else "")
        with contextlib.suppress(FileNotFoundError):
            if number >= count:
                directory.unlink(name)
            else:
                directory.replace(name, target)
                if not gz:
                    plain.append(target)
    return plain


def find_backup(directory: LogDirectory, base: str, key: Key) -> Optional[str]:
    """The uncompressed backup of ``base`` that is the file ``key``, if any is."""
    for _number, name in _backups(directory, base):
        if not name.endswith(".gz"):
            try:
                if key_of(directory.stat(name)) == key:
                    return name
            except FileNotFoundError:
                continue
    return None


class Compressor:
    """gzips a sink's rotated files, one at a time, in a lazily started daemon thread.

    The thread belongs to the process that started it: in a forked child the
    parent's queue is forgotten (the parent compresses those files) and a
    thread is started again only if the child itself rotates.
    """

    #: A thread with nothing to do for this long ends; the next job starts another.
    IDLE_EXIT = 10.0
    #: gzip's own default level: most of the size gain for a fraction of level 9's time.
    LEVEL = 6

    def __init__(self, directory: LogDirectory, base: str, mode: int, on_error: Callable[[], None]) -> None:
        self.directory = directory
        self.base = base
        self.mode = mode
        self._on_error = on_error
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._cond = threading.Condition(threading.Lock())
        self._jobs: Deque[Key] = collections.deque()
        self._active: Optional[Key] = None
        self._thread: Optional[threading.Thread] = None

    def _here(self) -> bool:
        """False, after a reset, in a forked child: the parent's jobs and lock are not ours."""
        if self._pid == os.getpid():
            return True
        self._reset()
        return False

    def submit(self, key: Key) -> None:
        """Compress the backup that is file ``key``; returns at once."""
        self._here()
        with self._cond:
            if key == self._active or key in self._jobs:
                return
            self._jobs.append(key)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="forklog-gzip", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    @property
    def busy(self) -> bool:
        return self._here() and (self._active is not None or bool(self._jobs))

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until no job is queued or running."""
        if not self._here():
            return True
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._active is not None or self._jobs:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    def _run(self) -> None:
        scheduling.background()
        while True:
            with self._cond:
                idle_until = time.monotonic() + self.IDLE_EXIT
                while not self._jobs:
                    remaining = idle_until - time.monotonic()
                    if remaining <= 0:
                        self._thread = None
                        return
                    self._cond.wait(remaining)
                key = self._active = self._jobs.popleft()
            try:
                self._compress(key)
            except Exception:  # noqa: BLE001 - reported; the file stays, uncompressed
                self._on_error()
            finally:
                with self._cond:
                    self._active = None
                    self._cond.notify_all()

    def _compress(self, key: Key) -> None:
        directory, base = self.directory, self.base
        # The gzip thread may wait longer than the listener: it holds back no record.
        with locked(directory, base + ".lock", self.mode, COMPRESSOR_LOCK_TIMEOUT):
            name = find_backup(directory, base, key)  # no rename between lookup and open
            if name is None:
                return  # rotated out of the backups, or compressed by another process
            src = directory.open(name, os.O_RDONLY)
        tmp: Optional[str] = None  # a random name: two processes may race on one file
        placed = False
        try:
            st = os.fstat(src)
            fd, tmp = create_in(directory, base, "gz", self.mode)
            with os.fdopen(fd, "wb") as out:
                archive = gzip.GzipFile(name, "wb", self.LEVEL, out, mtime=int(st.st_mtime))
                with archive:
                    _copy(src, archive)
                    with locked(directory, base + ".lock", self.mode, COMPRESSOR_LOCK_TIMEOUT):
                        # A process sharing the file may have written a last
                        # batch before it noticed the rotation.
                        _copy(src, archive)
                        archive.close()
                        out.flush()
                        where = find_backup(directory, base, key)
                        if where is not None:
                            directory.replace(tmp, where + ".gz")
                            placed = True
                            directory.unlink(where)
        finally:
            os.close(src)
            if not placed and tmp is not None:
                with contextlib.suppress(OSError):
                    directory.unlink(tmp)


def _copy(src: int, archive: gzip.GzipFile) -> None:
    while True:
        chunk = os.read(src, 1 << 20)
        if not chunk:
            return
        archive.write(chunk)
