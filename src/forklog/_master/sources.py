"""The pipes the receiver reads: the owner's, and one per registered writer (issue 21, item 7).

A writer registers a pipe of its own and a one-slot table
(:mod:`forklog._wire.registration`); the kernel names its pid. Every frame
read from that pipe is that writer's, whatever its header claims, and the
pipe's end (no write end left open) is its exit, behind everything it wrote:
the exit carries what its table says it numbered and whether it left by
forklog's exit path, for the listener to settle its account.

The table is bounded: at most ``MAX_SOURCES`` pipes, and no more than a
quarter of the master's descriptor limit (each pipe holds two: a worker
forking registering children must not leave the master unable to open a
log file); ``MAX_PER_PID`` per pid. Past them a registration's descriptors
are closed, counted and said.
"""

from __future__ import annotations

import contextlib
import os
import resource
import select
import socket
import struct
import threading
from typing import Dict, List, Optional, Tuple

from forklog._wire import framing, registration
from forklog._wire.scoreboard import Scoreboard

__all__ = ["EXIT", "MAX_PER_PID", "MAX_SOURCES", "Source", "Sources", "decode_exit", "most_sources"]

MAX_SOURCES = 4096
MAX_PER_PID = 16


def most_sources() -> int:
    """``MAX_SOURCES``, or a quarter of the descriptor limit when that is less (two descriptors a pipe)."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_SOURCES
    return max(16, min(MAX_SOURCES, soft // 4))


#: The payload of an EXITED item: the writer's boot, what it numbered, whether it left by the exit path.
EXIT = struct.Struct("<IQB")


class Source:
    """One pipe: its writer (the kernel's pid), its bytes not yet whole frames."""

    __slots__ = ("board", "boot", "buffer", "fd", "most", "owner", "pid")

    def __init__(self, fd: int, pid: int, boot: int, board: int, owner: bool = False) -> None:
        self.fd, self.pid, self.boot, self.board, self.owner = fd, pid, boot, board, owner
        self.buffer = bytearray()
        #: A read takes at most what the pipe can hold (os.read allocates what it is asked for).
        self.most = framing.pipe_capacity(fd)

    def exit_payload(self) -> bytes:
        """What the writer's own table says: numbered, and the exit mark."""
        numbered, left = 0, False
        if self.board >= 0:
            with contextlib.suppress(Exception):  # the writer's table: any size, any content
                table = Scoreboard(slots=1, fd=self.board).entries()
                for _slot, _boot, count, marked in table.get(self.pid, []):
                    numbered, left = count, marked
        return EXIT.pack(self.boot, min(numbered, (1 << 64) - 1), left)


def decode_exit(payload: bytes) -> Optional[Tuple[int, int, bool]]:
    """(boot, numbered, left) of an EXITED item's payload, or None."""
    if len(payload) != EXIT.size:
        return None
    boot, numbered, left = EXIT.unpack(payload)
    return boot, numbered, bool(left)


class Sources:
    """The receiver's pipes, by descriptor, and the registrations that add to them."""

    def __init__(self, own: Source, registrations: Optional[socket.socket]) -> None:
        self.by_fd: Dict[int, Source] = {own.fd: own}
        self._registrations = registrations
        self._per_pid: Dict[int, int] = {}
        #: Registrations refused by a bound (their descriptors closed).
        self.refused = 0
        #: The uid each writer registered with, by pid, while its pipes last (shared with the targets:
        #: the master opens no file a writer of another user names, forklog._master.targets).
        self.registered: Dict[int, int] = {}
        self.most = most_sources()
        #: Held while descriptors are taken in: a fork copies no half-known descriptor.
        self.lock = threading.Lock()
        self.poller = select.poll()
        self.poller.register(own.fd, select.POLLIN)
        if registrations is not None:
            self.poller.register(registrations.fileno(), select.POLLIN)

    @property
    def registration_fd(self) -> int:
        return self._registrations.fileno() if self._registrations is not None else -1

    def accept(self, most: int = 64) -> int:
        """Take in the writers that registered; how many were refused (past a bound, or malformed)."""
        if self._registrations is None:
            return 0
        with self.lock:
            writers, refused = registration.receive(self._registrations, most)
            for writer in writers:
                if len(self.by_fd) > self.most or self._per_pid.get(writer.pid, 0) >= MAX_PER_PID:
                    framing.close_fds(writer.pipe, writer.board)
                    refused += 1
                    continue
                self.by_fd[writer.pipe] = Source(writer.pipe, writer.pid, writer.boot, writer.board)
                self._per_pid[writer.pid] = self._per_pid.get(writer.pid, 0) + 1
                self.registered[writer.pid] = writer.uid
                self.poller.register(writer.pipe, select.POLLIN)
        self.refused += refused
        return refused

    def close(self, source: Source) -> bytes:
        """The pipe ended: forget it; its exit payload (read before its table is closed)."""
        payload = source.exit_payload()
        with self.lock:
            self.by_fd.pop(source.fd, None)
            with contextlib.suppress(KeyError, ValueError):
                self.poller.unregister(source.fd)
            left = self._per_pid.get(source.pid, 1) - 1
            if left > 0:
                self._per_pid[source.pid] = left
            else:
                self._per_pid.pop(source.pid, None)
                self.registered.pop(source.pid, None)
            framing.close_fds(source.fd, source.board)
        return payload

    def writers(self) -> List[Source]:
        return [source for source in list(self.by_fd.values()) if not source.owner]

    def backlog(self) -> int:
        return sum(framing.pipe_backlog(fd) for fd in list(self.by_fd))

    def release_in_child(self) -> None:
        """In a forked child: every writer's pipe read end and the registrations' end are the master's.

        The owner's own pipe is the channel's to close (Channel._after_fork).
        """
        for source in self.writers():
            framing.close_fds(source.fd, source.board)
        self.by_fd.clear()
        if self._registrations is not None:
            with contextlib.suppress(OSError):
                self._registrations.close()

    def read(self, fd: int, most: int) -> Optional[bytes]:
        """Up to ``most`` bytes of pipe ``fd``; b"" at its end, None if it has none now."""
        try:
            return os.read(fd, most)
        except (BlockingIOError, InterruptedError):
            return None
