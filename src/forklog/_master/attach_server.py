"""Processes the hub never forked attach to it by an address (``forklog run``, issue 24).

gunicorn's workers and a pool's children reach the hub because forklog is
there at their birth: a fork inherits the channel, a spawned child is given
it by ``multiprocessing``. A process started by a server forklog does not
control (uvicorn's spawned workers, Celery's children, a script's pool
under any start method, a ``subprocess``) connects instead to a Unix socket
the hub's process listens on, named by the ``FORKLOG_HUB`` variable.

The server gives a connecting process what a spawned child is given: the
writers' end of the registration socket and the owner's table, as
descriptors (``SCM_RIGHTS``), and the channel's policy. The process then
registers a pipe of its own exactly as a forked worker does, its pid and uid
named by the kernel (forklog._wire.registration): nothing it says of itself
is taken. So the address grants no more than a pipe of one's own.

Who may connect: the socket is in a directory of its own (``0700``, the
hub's user), so only that user (and root) can reach it; the kernel's
credentials of the peer (``SO_PEERCRED``) are checked again, and a process
of another user is refused, said once on stderr and counted.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import select
import shutil
import socket
import struct
import tempfile
import threading
from typing import Callable, Optional

from forklog import _hub_thread
from forklog._stderr import Reporter
from forklog._worker.channel import Channel
from forklog._worker.inheritance import policy

__all__ = ["ATTACH", "ENV", "REFUSED", "REOPEN", "AttachServer"]

#: The variable that names the hub's address for the processes below it.
ENV = "FORKLOG_HUB"
_CREDS = struct.Struct("iII")  # struct ucred: pid, uid, gid
#: What a refused peer reads before the connection closes.
REFUSED = b"forklog: refused"
#: The two requests a peer sends first: be given a channel, or have the hub reopen its files.
ATTACH, REOPEN = b"attach", b"reopen"


class AttachServer:
    """A listening socket in a private directory; each connection is given the hub's channel."""

    def __init__(
        self,
        channel: Channel,
        reporter: Reporter,
        group: Optional[int] = None,
        reopen: Optional[Callable[[], None]] = None,
    ) -> None:
        self._channel = channel
        self._reporter = reporter
        #: Reopens the hub's files: asked by a process of the hub's user (gunicorn's master on USR1).
        self._reopen = reopen
        #: Members of this group may attach too, as writers of another user (see forklog._master.targets).
        self.group = group
        self.directory = tempfile.mkdtemp(prefix="forklog-hub-")  # 0700, this user's
        self.address = os.path.join(self.directory, "hub.sock")
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(self.address)
        os.chmod(self.address, 0o600)
        if group is not None:  # the group may enter the directory and connect; nobody else
            for path, mode in ((self.directory, 0o750), (self.address, 0o660)):
                os.chown(path, -1, group)
                os.chmod(path, mode)
        self._sock.listen(128)
        self._closing = False
        #: Connections given the channel, and refused (another user).
        self.attached = 0
        self.refused = 0
        self._thread = threading.Thread(target=self._serve, name="forklog-attach", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        _hub_thread.mark()
        while not self._closing:
            try:
                ready, _w, _x = select.select([self._sock], [], [], 0.2)
                if not ready:
                    continue
                conn, _address = self._sock.accept()
            except OSError:
                if self._closing:
                    return
                continue
            with conn:
                self._answer(conn)

    def _answer(self, conn: socket.socket) -> None:
        conn.settimeout(1.0)
        try:
            creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CREDS.size)
            pid, uid, gid = _CREDS.unpack(creds)
            if uid not in (os.geteuid(), 0) and not self._member(pid, gid):
                self.refused += 1
                self._reporter.report(
                    f"attach-refused:{uid}",
                    f"pid {pid} of uid {uid} asked to attach to the hub of uid {os.geteuid()}: refused",
                )
                conn.sendall(REFUSED)
                return
            if conn.recv(len(REOPEN)) == REOPEN:  # every request names itself first
                if uid in (os.geteuid(), 0) and self._reopen is not None:
                    self._reopen()
                    conn.sendall(b"ok")
                return
            channel = self._channel
            board = channel.scoreboard
            fds = [channel.register_fd] + ([board.fd] if board is not None else [])
            socket.send_fds(conn, [pickle.dumps(policy(channel))], fds)
            self.attached += 1
        except OSError:
            pass  # the process went away: nothing was given

    def _member(self, pid: int, gid: int) -> bool:
        """Whether the peer is in the configured group (its primary group, or one of its others)."""
        if self.group is None:
            return False
        if gid == self.group:
            return True
        with contextlib.suppress(OSError, ValueError), open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("Groups:"):
                    return self.group in {int(g) for g in line.split()[1:]}
        return False

    def close(self) -> None:
        """Stop accepting, and remove the socket and its directory."""
        self._closing = True
        self._thread.join(2.0)
        with contextlib.suppress(OSError):
            self._sock.close()
        shutil.rmtree(self.directory, ignore_errors=True)
