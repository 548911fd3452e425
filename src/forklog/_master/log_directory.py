"""A log file's directory, held open: every open, rename, lock and removal relative to it, no link followed.

gunicorn's master often runs as root while its workers run as another user
who may be able to write the log's directory (the directory an app needed
without forklog). A worker there could replace ``app.log``, a backup, the
lock or a temporary file with a symbolic link to a root-only path, and a
master working by path would then write through it (issue 21, item 1). So a
file sink opens its directory once, when it is made (in the master, before
any worker runs), and from then on works relative to that descriptor:

* files are opened with ``O_NOFOLLOW | O_NONBLOCK`` and must be regular
  files (a link, a FIFO or a device is refused, an ``OSError`` the sink
  counts and retries);
* renames and removals name entries of the held directory (a link is
  renamed or removed itself, never followed), and ``stat`` does not follow;
* a worker that renames the directory away cannot send the master
  elsewhere: the descriptor still names the same directory.

Directories are created with a mode derived from the files' (``0o640`` gives
``0o750``), every missing level, whatever the umask lets through.
The descriptor is close-on-exec and let go of in a forked child.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from typing import List

__all__ = ["LogDirectory", "directory_mode", "make_directories"]

_OPEN_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
#: Added to every open of a file in the directory.
_SAFE = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def directory_mode(file_mode: int) -> int:
    """The mode of a directory forklog creates for files of ``file_mode``: search where read is."""
    return (file_mode | ((file_mode & 0o444) >> 2) | 0o700) & 0o777


def make_directories(path: str, mode: int) -> None:
    """``os.makedirs(path)`` with ``mode`` for every level it creates (makedirs gives the parents 0o777)."""
    parent = os.path.dirname(path)
    if parent and parent != path and not os.path.isdir(parent):
        make_directories(parent, mode)
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, mode)


class LogDirectory:
    """The directory of a log file, held open for the life of its sink."""

    def __init__(self, path: str, file_mode: int, create: bool = True) -> None:
        """Open ``path`` now if it is there (made first, with ``create``); else at first use."""
        self.path = path or "."
        self.file_mode = file_mode
        self._fd = -1
        self._pid = os.getpid()
        with contextlib.suppress(OSError):  # not there yet and not creatable: tried again at each use
            if create:
                self.fd()
            else:
                self._fd = os.open(self.path, _OPEN_DIRECTORY)

    def fd(self) -> int:
        """The directory's descriptor, opened (and the directory made) on first use."""
        if self._fd >= 0 and self._pid == os.getpid():
            return self._fd
        try:
            fd = os.open(self.path, _OPEN_DIRECTORY)
        except FileNotFoundError:
            # A missing directory is made, as gunicorn makes its own files':
            # a sink that fails on every record while gunicorn serves helps no one.
            make_directories(self.path, directory_mode(self.file_mode))
            fd = os.open(self.path, _OPEN_DIRECTORY)
        self._fd, self._pid = fd, os.getpid()
        return fd

    def open(self, name: str, flags: int, mode: int = 0o640) -> int:
        """A regular file of the directory, of one name, opened never through a link; else ``OSError``."""
        fd = os.open(name, flags | _SAFE, mode, dir_fd=self.fd())
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise OSError(errno.EINVAL, "not a regular file", os.path.join(self.path, name))
            if st.st_nlink > 1:  # a worker's hard link to a file it cannot write (no protected_hardlinks)
                raise OSError(errno.EMLINK, "a file with other links", os.path.join(self.path, name))
            if flags & os.O_NONBLOCK == 0:
                os.set_blocking(fd, True)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def stat(self, name: str) -> os.stat_result:
        """``lstat`` of an entry: a link is itself, never what it names."""
        return os.stat(name, dir_fd=self.fd(), follow_symlinks=False)

    def replace(self, source: str, target: str) -> None:
        fd = self.fd()
        os.replace(source, target, src_dir_fd=fd, dst_dir_fd=fd)

    def unlink(self, name: str) -> None:
        os.unlink(name, dir_fd=self.fd())

    def names(self) -> List[str]:
        return os.listdir(self.fd())

    def create_exclusive(self, name: str, mode: int) -> int:
        """A new file of the directory, for writing; ``FileExistsError`` if anything has the name."""
        return os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _SAFE, mode, dir_fd=self.fd())

    def close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0 and self._pid == os.getpid():
            with contextlib.suppress(OSError):
                os.close(fd)

    def release_in_child(self) -> None:
        """In a forked child: the directory is the master's; a worker keeps no descriptor of it."""
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
        self._fd = -1
