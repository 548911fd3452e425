"""How a writer tells the master who it is: its own pipe, named by the kernel (issue 21, item 7).

Every byte a worker writes is untrusted, what a frame says of its writer
included: on one pipe shared by every process, a worker could log under a
sibling's pid, forge its drop reports and its losses. So each process that
logs has a pipe of its own. It makes the pipe (and a one-slot scoreboard of
its own) when it starts (a fork, a spawn, a re-attach) and hands the read
end to the master as a datagram on a socket pair the master made, the
descriptors passed with ``SCM_RIGHTS``. With ``SO_PASSCRED`` on its end,
the master learns the sender's pid from the kernel, not from the datagram.
From then on the pipe *is* the writer: its frames are that pid's, whatever
their headers say, and the end of the pipe (every write end closed) is its
exit, behind every byte it wrote.

Writes stay one ``write()`` of at most ``PIPE_BUF`` bytes on a pipe, as
before; the master reads each pipe in bulk. Where the kernel gives no
credentials (not Linux), the datagram's own pid is taken: an untrusted
claim, said in the README.
"""

from __future__ import annotations

import array
import contextlib
import os
import socket
import stat
import struct
from typing import List, NamedTuple, Optional, Tuple

from forklog._wire import framing
from forklog._wire.scoreboard import Scoreboard

__all__ = ["Registration", "make_pair", "receive", "register", "send"]

_MAGIC = b"forklog-writer"
_BODY = struct.Struct("<III")  # wire version, pid (as the writer says it), boot
_CREDS = struct.Struct("iII")  # struct ucred: pid, uid, gid
_PASSCRED = getattr(socket, "SO_PASSCRED", None)
_SCM_CREDENTIALS = getattr(socket, "SCM_CREDENTIALS", None)
#: The longest a writer waits for room to register: the socket holds few datagrams
#: (``net.unix.max_dgram_qlen``, 10 here) while the master takes them in; a master
#: that stopped reading costs a new writer this once.
SEND_TIMEOUT = 5.0


class Registration(NamedTuple):
    """A writer, as the master knows it: the kernel's pid, its boot, its pipe and its slot's memory."""

    pid: int
    uid: int
    boot: int
    version: int
    pipe: int
    board: int


def make_pair() -> Tuple[socket.socket, socket.socket]:
    """(the master's end, the writers' end): datagrams, close-on-exec, credentials on the master's end."""
    master, writers = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    if _PASSCRED is not None:
        master.setsockopt(socket.SOL_SOCKET, _PASSCRED, 1)
    master.setblocking(False)
    return master, writers


def register(writers_fd: int, sizes: Tuple[int, ...], pid: int, boot: int) -> Tuple[int, Scoreboard, bool]:
    """A pipe and a one-slot table of this process's own, handed to the master.

    (the pipe's write end, non-blocking; the table, its slot claimed; whether
    the master took them). The read end is closed here: the master holds it.
    """
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    framing.grow_pipe(read_fd, sizes)
    os.set_blocking(write_fd, False)
    board = Scoreboard(slots=1)
    board.claim(0, pid, boot)
    try:
        return write_fd, board, send(writers_fd, framing._VERSION, boot, read_fd, board.fd)
    finally:
        os.close(read_fd)


def send(writers_fd: int, version: int, boot: int, pipe: int, board: int) -> bool:
    """Register this process's ``pipe`` read end and ``board``; False if the master is gone or full."""
    with contextlib.suppress(OSError):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM, fileno=os.dup(writers_fd))
        try:
            sock.settimeout(SEND_TIMEOUT)
            body = _MAGIC + _BODY.pack(version, os.getpid(), boot)
            socket.send_fds(sock, [body], [pipe, board])
            return True
        finally:
            sock.close()
    return False


def receive(master: socket.socket, most: int) -> Tuple[List[Registration], int]:
    """The registrations waiting on ``master`` (at most ``most``), and how many were malformed.

    A malformed one (its descriptors cut short by the master's limit, a
    wrong shape) has its descriptors closed, and is counted, never kept.
    """
    out: List[Registration] = []
    malformed = 0
    room = socket.CMSG_SPACE(2 * 4)
    if _SCM_CREDENTIALS is not None:
        room += socket.CMSG_SPACE(_CREDS.size)
    while len(out) < most:
        try:
            data, ancillary, flags, _address = master.recvmsg(64, room)
        except (BlockingIOError, InterruptedError):
            break
        except OSError:
            break
        fds: List[int] = []
        pid: Optional[int] = None
        uid = -1
        for level, kind, item in ancillary:
            if level != socket.SOL_SOCKET:
                continue
            if kind == socket.SCM_RIGHTS:
                numbers = array.array("i")
                numbers.frombytes(item[: len(item) - len(item) % numbers.itemsize])
                fds += list(numbers)
            elif kind == _SCM_CREDENTIALS and len(item) >= _CREDS.size:
                pid, uid, _gid = _CREDS.unpack_from(item)
        registration = None if flags & socket.MSG_CTRUNC else _checked(data, fds, pid, uid)
        if registration is None:
            malformed += 1
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
            continue
        out.append(registration)
    return out, malformed


def _checked(data: bytes, fds: List[int], pid: Optional[int], uid: int) -> Optional[Registration]:
    """The registration in ``data`` with ``fds``: its shape, and a pipe and a file as descriptors."""
    if not data.startswith(_MAGIC) or len(data) != len(_MAGIC) + _BODY.size or len(fds) != 2:
        return None
    version, claimed, boot = _BODY.unpack_from(data, len(_MAGIC))
    try:
        pipe, board = os.fstat(fds[0]), os.fstat(fds[1])
    except OSError:
        return None
    if not stat.S_ISFIFO(pipe.st_mode) or not stat.S_ISREG(board.st_mode):
        return None
    os.set_blocking(fds[0], False)
    return Registration(claimed if pid is None else pid, uid, boot, version, fds[0], fds[1])
