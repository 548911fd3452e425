"""A process the hub never forked attaches to it by its address (see forklog._master.attach_server).

``attach()`` connects to the address ``FORKLOG_HUB`` names, is given the
hub's channel (the registration socket's writers' end, the owner's table,
the drop policy) and sets this process up as ``init_worker`` does a pool
child: its own pipe, the application's handlers adopted. Bounded: a hub
that is not there, or does not answer within ``timeout``, leaves the
process logging as it would without forklog, said once on stderr.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import socket
import struct
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

from forklog._wire import framing
from forklog._wire.scoreboard import Scoreboard
from forklog._worker import adoption
from forklog._worker.channel import Channel
from forklog._worker.handler import ForkHandler, init_worker

__all__ = ["ENV", "UID_ENV", "Handler", "attach", "hub_answers", "request_reopen"]

#: The variable that names the hub's address (forklog run sets it for the processes below it).
ENV = "FORKLOG_HUB"
#: The hub's uid, which forklog run sets beside the address: only a hub of this process's own
#: user, root, or this uid may answer there (another user may have made a socket at that path).
UID_ENV = "FORKLOG_HUB_UID"
_CREDS = struct.Struct("iII")  # struct ucred: pid, uid, gid
#: The longest a process's start waits for the hub (Celery gives a child 4 s to start).
TIMEOUT = 1.0
WITHOUT = "it logs as it would without forklog"


def attach(address: Optional[str] = None, timeout: float = TIMEOUT) -> Optional[ForkHandler]:
    """Attach this process to the hub at ``address`` (``FORKLOG_HUB`` by default); None if it cannot.

    Nothing happens in a process already attached (a fork of an attached
    process is: its channel followed it).
    """
    address = address if address is not None else os.environ.get(ENV)
    if not address or adoption.attached() is not None:
        return None
    given = _connect(address, timeout)
    if given is None:
        _say(f"forklog: pid {os.getpid()} could not attach to the hub at {address}: {WITHOUT}")
        return None
    data, fds = given
    try:
        options: Dict[str, Any] = pickle.loads(data)  # the hub's own process sent it
        scoreboard = Scoreboard(slots=1, fd=fds[1]) if len(fds) > 1 else None
    except Exception:  # noqa: BLE001 - not the hub's answer
        framing.close_fds(*fds)
        _say(f"forklog: pid {os.getpid()}: the hub at {address} answered something else: {WITHOUT}")
        return None
    channel = Channel._attach(fds[0], scoreboard, **options)
    return init_worker(channel)


def request_reopen(address: Optional[str] = None, timeout: float = TIMEOUT) -> bool:
    """Ask the hub at ``address`` (``FORKLOG_HUB``) to reopen its files (USR1 below forklog run)."""
    address = address if address is not None else os.environ.get(ENV)
    if not address:
        return False
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(address)
        if not _trusted(sock):
            return False
        sock.sendall(b"reopen")  # forklog._master.attach_server.REOPEN
        return sock.recv(2) == b"ok"
    except OSError:
        return False
    finally:
        sock.close()


def hub_answers(address: str, timeout: float = TIMEOUT) -> bool:
    """Whether the hub at ``address`` gives this process a channel (what it gives is closed at once)."""
    given = _connect(address, timeout)
    if given is None:
        return False
    framing.close_fds(*given[1])
    return True


def _connect(address: str, timeout: float) -> Optional[Tuple[bytes, List[int]]]:
    """(the policy, the descriptors) the hub at ``address`` gives, or None if it is not there or refuses."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    fds: List[int] = []
    try:
        sock.connect(address)
        if not _trusted(sock):
            return None
        sock.sendall(b"attach")  # the request (forklog._master.attach_server.ATTACH)
        data, fds, _flags, _address = socket.recv_fds(sock, 1 << 16, 2)
        for fd in fds:
            os.set_inheritable(fd, False)  # never passed on by an exec()
        chunks = [data]
        while data:  # the hub closes the connection once it has sent the whole policy
            if time.monotonic() > deadline:
                raise TimeoutError("the hub's answer took too long")
            data = sock.recv(1 << 16)
            chunks.append(data)
    except OSError:
        framing.close_fds(*fds)
        return None
    finally:
        sock.close()
    if not fds:
        return None
    return b"".join(chunks), fds


def _trusted(sock: socket.socket) -> bool:
    """Whether the process that answers is a hub this one may take a policy from (see UID_ENV)."""
    try:
        _pid, uid, _gid = _CREDS.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CREDS.size))
    except (OSError, struct.error):
        return False
    named = os.environ.get(UID_ENV, "")
    return uid in (os.geteuid(), 0) or (named.isdigit() and uid == int(named))


def _say(text: str) -> None:
    with contextlib.suppress(Exception):
        sys.stderr.write(text + "\n")
        sys.stderr.flush()


class Handler(logging.Handler):
    """A handler a logging config can name (``"class": "forklog.Handler"``): records go to the hub.

    For a process forklog run's hook does not reach, or a config that
    routes some loggers only: made in a process, it attaches that process to
    the hub ``FORKLOG_HUB`` names (if it is not attached yet) and sends what
    it handles there, as the hub's own handler does. Without a hub, records
    go to stderr, as ``logging.lastResort`` would write them, said once.
    """

    def __init__(self, level: int = logging.NOTSET) -> None:
        super().__init__(level)
        if adoption.attached() is None:
            attach()
        channel = adoption.attached()
        self._inner = ForkHandler(channel) if channel is not None else None

    def emit(self, record: logging.LogRecord) -> None:
        if self._inner is not None:
            self._inner.emit(record)
            return
        try:
            adoption.last_resort(self.format(record) + "\n")
        except Exception:  # noqa: BLE001 - the logging contract
            self.handleError(record)
