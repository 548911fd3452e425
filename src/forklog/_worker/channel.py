"""The channel between every emitting process and the master: one pipe.

Why a pipe and not ``multiprocessing.Queue`` (DESIGN H1, H2, H13, H18, H19):

* **No lock, no helper thread.** A frame is at most ``PIPE_BUF`` (4096)
  bytes and goes to the kernel with one ``write()``, which POSIX makes
  atomic for pipes. Writers need no cross-process lock, so a process
  SIGKILLed at any moment cannot wedge the others (``mp.Queue``'s shared
  write lock can, gunicorn#1621), and there is no feeder thread to orphan by
  a raw ``os.fork()`` or to deadlock under gevent. When the log call
  returns, the record is in the kernel's hands.
* **Never blocks the caller for long.** The write end is non-blocking.
  When the pipe is full, a record below the *keep level* is dropped at once
  and counted; one at or above it waits at most ``keep_wait`` seconds. The
  counts go out as one WARNING summary record as soon as the pipe takes
  records again (rsyslog's ``discardMark`` style, H4).
* **Large records** are split into frames (:mod:`forklog._wire.framing`),
  checked and put back together in the master; frames of different
  processes and threads interleave freely.

The master creates the channel: its own pipe, and the socket pair on which
every other process registers a pipe of its own (:mod:`forklog._wire.registration`):
a frame's writer is the pipe it came on, never what its header claims
(issue 21, item 7). Children get the writers' end of the socket by
``fork()`` or pickled (:mod:`forklog._worker.inheritance`), and register at
once.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import os
import time
import weakref
import zlib
from typing import Any, Callable, Dict, List, Optional, Tuple

from forklog import _wire as wire
from forklog import formatters
from forklog._hub_thread import on_hub_thread
from forklog._renderers import record_renderers
from forklog._stderr import feedback_reporter
from forklog._wire import adopted_lines, framing, registration
from forklog._wire.framing import (
    _CRC,
    _HEAD,
    _MAGIC,
    _VERSION,
    CONTROL,
    FIRST,
    LAST,
    MAX_PAYLOAD,
    NO_SEQ,
    PIPE_SIZES,
    encode_drops,
    grow_pipe,
    wait_writable,
    writable,
)
from forklog._wire.scoreboard import Scoreboard
from forklog._worker import inheritance
from forklog._worker.drops import DropCounters, level_key

__all__ = ["Channel"]


class Channel(DropCounters):
    """The write side of the pipe, in every process; the read end in its owner.

    ``hub.queue`` is a :class:`Channel`. It offers ``put_nowait(record)``
    and ``put(record, block, timeout)``, so a stock
    ``logging.handlers.QueueHandler`` can use it too.
    """

    #: The drop policy and what the master asks of the records (the defaults of
    #: a channel attached in a child, see _attach).
    keep_level: int = logging.ERROR
    keep_wait: float = 0.1
    max_record_bytes: int = 1 << 20
    #: The lowest level any sink in the master wants; children set their
    #: root logger to it so no record a sink wants is filtered out early.
    level: int = logging.NOTSET
    #: The formatters whose lines the emitting processes make themselves
    #: (set by the hub at start, see :func:`forklog._wire.lines.encode_lines`).
    line_formatters: Tuple[logging.Formatter, ...] = ()
    #: Whether the master also has sinks that need each record's fields
    #: (syslog, OTLP): the lines then carry the fields too, while the
    #: scoreboard says those sinks take records (see _want_fields).
    fields_with_lines: bool = False
    #: The read end of the owner's own pipe, in the owner only.
    read_fd: Optional[int]
    #: This process's own pipe's write end.
    write_fd: int
    #: The writers' end of the registration socket pair (see forklog._wire.registration).
    register_fd: int
    #: The master's end, in the owner only (the receiver reads it).
    registrations: Optional[Any]
    #: The owner's table: the word telling writers whether fields are wanted.
    scoreboard: Optional[Scoreboard]
    #: This writer's own one-slot scoreboard (None in the owner), registered with its pipe.
    board: Optional[Scoreboard]
    #: The effective uid of the hub's owner: a process of another user
    #: keeps its file handlers (see forklog._worker.adoption).
    owner_uid: int
    #: Records logged on the hub's own threads, kept out of the hub (see _feedback).
    feedback: int = 0
    #: Closes this process's pipe and slot when the channel is dropped (see _register).
    _release: Optional[weakref.finalize] = None  # type: ignore[type-arg]
    #: Closes what a channel attached in a child was given (see _attach).
    _release_given: Optional[weakref.finalize] = None  # type: ignore[type-arg]

    def __init__(
        self,
        *,
        keep_level: int = logging.ERROR,
        keep_wait: float = 0.1,
        max_record_bytes: int = 1 << 20,
        level: int = logging.NOTSET,
        pipe_size: Optional[int] = None,
        line_formatters: Tuple[logging.Formatter, ...] = (),
        fields_with_lines: bool = False,
    ) -> None:
        """A new pipe (and scoreboard), owned by the calling process."""
        self.keep_level, self.keep_wait, self.max_record_bytes = keep_level, keep_wait, max_record_bytes
        self.level, self.line_formatters, self.fields_with_lines = level, line_formatters, fields_with_lines
        read_fd, write_fd = os.pipe()
        grow_pipe(read_fd, PIPE_SIZES if pipe_size is None else (pipe_size,))
        #: The size of each writer's own pipe (the hub's pipe_size when given).
        self.pipe_sizes = framing.WRITER_PIPE_SIZES if pipe_size is None else (pipe_size,)
        os.set_blocking(write_fd, False)
        os.set_blocking(read_fd, False)
        self.read_fd, self.write_fd, self.scoreboard = read_fd, write_fd, Scoreboard(slots=1)
        master, writers = registration.make_pair()
        self.registrations, self.register_fd = master, writers.detach()
        self.board = None
        self.owner_uid = os.geteuid()
        self._release = None
        self._reset_process_state()
        inheritance.register(self)

    @classmethod
    def _attach(
        cls, register_fd: int, scoreboard: Optional[Scoreboard], owner_uid: int = -1, **policy: Any
    ) -> Channel:
        """A channel onto an owner's hub, in a child being created (see forklog._worker.inheritance).

        ``policy``: the owner's keep_level, keep_wait, max_record_bytes,
        level, pipe_sizes, line_formatters and fields_with_lines. The channel
        registers a pipe of its own at once. It owns the descriptors it is
        given: dropped without close(), it closes them (not at exit, where
        logging.shutdown() still flushes through it).
        """
        channel = cls.__new__(cls)
        channel.__dict__.update(policy)
        channel.read_fd, channel.write_fd, channel.scoreboard = None, -1, scoreboard
        channel.register_fd, channel.registrations, channel.board = register_fd, None, None
        channel.owner_uid = os.geteuid() if owner_uid < 0 else owner_uid
        channel._release = None
        # What it was given is its own too: closed when it is dropped, as its pipe is.
        board_fd = scoreboard.fd if scoreboard is not None else -1
        channel._release_given = weakref.finalize(channel, framing.close_fds, register_fd, board_fd)
        channel._release_given.atexit = False
        channel._reset_process_state()
        inheritance.register(channel)
        return channel

    # -- process-local state ------------------------------------------------

    def _reset_process_state(self) -> None:
        self.pid = os.getpid()
        self.boot = int.from_bytes(os.urandom(4), "little")
        #: Every record this process sends takes the next number, dropped ones
        #: too; the master turns numbers it never received into a loss report.
        self._seq = itertools.count()
        self._reset_drop_counters()
        self.sent = 0
        #: Records whose send waited for room in the pipe: one at or above the
        #: keep level, or a large record whose first frame is out. A record of
        #: one frame below the keep level never does (the tests count this
        #: rather than time calls).
        self.waited = 0
        self._renderers: Optional[List[Any]] = None  # made from line_formatters on first use
        self._with_traceback = False
        self._fields_wanted = True
        self._fields_checked = 0.0
        #: The master's end is closed (its hub stopped): nothing will read what is sent.
        self.hub_gone = False
        self._slot = -1
        if self.read_fd is None:  # not the owner: a pipe and a slot of this process's own
            self._register()

    def _register(self) -> None:
        """Make this process's own pipe and slot, and hand them to the master (forklog._wire.registration).

        The descriptors this process inherited for writing (its parent's
        pipe, its parent's slot) are closed: it never writes as another.
        """
        old_write, old_board, old_release = self.write_fd, self.board, self._release
        sizes = getattr(self, "pipe_sizes", framing.WRITER_PIPE_SIZES)
        write_fd, board, registered = registration.register(self.register_fd, sizes, self.pid, self.boot)
        self.hub_gone = not registered  # its writes then find no reader (EPIPE): nothing waits on them
        self.write_fd, self.board, self._slot = write_fd, board, 0
        self._release = weakref.finalize(self, framing.close_fds, write_fd, board.fd)
        self._release.atexit = False
        if old_release is not None:
            old_release.detach()
        framing.close_fds(old_write)
        if old_board is not None:
            old_board.close()

    @property
    def is_owner(self) -> bool:
        """True in the process that created the channel and reads it."""
        return self.read_fd is not None and self.pid == os.getpid()

    def _after_fork(self) -> None:
        """In a forked child: the master's ends closed, then fresh counters and a pipe of its own."""
        if self.read_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.read_fd)
            self.read_fd = None
        if self.registrations is not None:
            with contextlib.suppress(OSError):
                self.registrations.close()
            self.registrations = None
        self._reset_process_state()

    def __reduce__(self) -> Tuple[Callable[..., Channel], Tuple[Any, ...]]:
        return inheritance.reduce(self)

    # -- the queue interface (stock QueueHandler) -----------------------------

    def put_nowait(self, record: logging.LogRecord) -> None:
        """Send ``record`` under the drop policy; never raises, never blocks long."""
        self.send_record(record)

    def put(self, record: logging.LogRecord, block: bool = True, timeout: Optional[float] = None) -> None:
        """Like :meth:`put_nowait`: the drop policy, not ``block``/``timeout``, bounds the wait."""
        self.send_record(record)

    # -- sending ---------------------------------------------------------------

    def send_record(self, record: logging.LogRecord) -> bool:
        """Encode and send ``record``; ``False`` if it was dropped (and counted)."""
        if on_hub_thread():
            return self._feedback(record)
        levelno = record.levelno
        if self._dropped_total and levelno < self.keep_level and not writable(self.write_fd):
            # Still full since the last drop: drop without encoding, the
            # cheapest a log call can be while the master catches up.
            self._publish(next(self._seq) + 1)
            self._count_drop(record.levelname)
            return False
        payload = None
        if self.line_formatters:
            renderers = self._renderers
            if renderers is None:
                renderers = self._renderers = record_renderers(self.line_formatters)
                # A JSON line holds its traceback inside: the master cannot add it after.
                self._with_traceback = not any(
                    isinstance(formatter, formatters.JSONFormatter) for formatter in self.line_formatters
                )
            if renderers:
                with_fields = self.fields_with_lines and self._want_fields()
                payload = wire.encode_lines(record, renderers, self.pid, self._with_traceback, with_fields)
                if payload is not None and len(payload) > self.max_record_bytes:
                    payload = None
        if payload is None:
            payload = wire.encode(record, self.max_record_bytes)
        return self._send_payload(payload, record)

    def _send_payload(self, payload: bytes, record: logging.LogRecord) -> bool:
        """Send one record's payload under the drop policy; the drop counted unless the hub is gone."""
        if not self._send(payload, record.levelno):
            if not self.hub_gone:
                self._count_drop(record.levelname)
            return False
        if self._dropped_total:
            # The pipe takes records again: report what it refused, right behind.
            self._send_drop_summary()
        return True

    #: How often a writer asks the scoreboard whether the fields are wanted.
    FIELDS_CHECK_INTERVAL = 0.02

    def send_text(self, spec: bytes, record: logging.LogRecord, text: str, terminator: str = "\n") -> bool:
        """Send the line an adopted handler made for ``record`` (``text`` then ``terminator``) to ``spec``.

        The same drop policy as :meth:`send_record`; ``False`` if the line
        was dropped (counted) or the hub is gone (not counted: the caller
        writes it to stderr).
        """
        if on_hub_thread():
            return self._feedback(record)
        levelno = record.levelno
        try:
            payload = adopted_lines.encode(spec, levelno, record.created, text + terminator)
        except Exception:  # noqa: BLE001 - a record whose level or time is not a number
            self._count_drop(level_key(record.levelname))
            return False
        if len(payload) > self.max_record_bytes:
            # The text is cut, never its terminator: the next line starts a line.
            cut = wire.cut_text(text, len(payload) - self.max_record_bytes)
            payload = adopted_lines.encode(spec, levelno, record.created, cut + terminator)
        return self._send_payload(payload, record)

    def _feedback(self, record: logging.LogRecord) -> bool:
        """A record logged on one of the hub's own threads: stderr at a bounded rate, counted, never the hub.

        A sink whose ``emit`` logs (an HTTP client retrying) would otherwise
        send its record back through the hub into itself, without end (H26).
        """
        self.feedback += 1

        try:
            text = f"{record.levelname} {record.name}: {wire.merged_message(record)}"
        except Exception:  # noqa: BLE001 - whatever the record holds
            level, name = getattr(record, "levelname", "?"), getattr(record, "name", "?")
            text = f"{wire.safe_str(level)} {wire.safe_str(name)}"
        feedback_reporter.report(
            "feedback", f"a record logged on the hub's own thread was kept out of the hub: {text}"
        )
        return False

    def _want_fields(self) -> bool:
        """Whether to send the fields with the lines: the master's fields sinks take records.

        While they all refuse (a syslog server down, their buffers full), the
        master counts every record as their drop either way; the writers then
        spare themselves the fields (and the master the decoding), which
        keeps the files as fast as with no such sink. Asked at most every
        FIELDS_CHECK_INTERVAL seconds: one ``pread``, not one per record.
        """
        now = time.monotonic()
        if now >= self._fields_checked:
            self._fields_checked = now + self.FIELDS_CHECK_INTERVAL
            board = self.scoreboard
            self._fields_wanted = board.fields_wanted() if board is not None else True
        return self._fields_wanted

    def _send(self, payload: bytes, levelno: int, numbered: bool = True) -> bool:
        # A drop summary reports records and is not one of them: no number.
        seq = next(self._seq) if numbered else NO_SEQ
        size = len(payload)
        if size <= MAX_PAYLOAD:
            # The common case, inline: one frame, one write().
            checked = (
                _HEAD.pack(FIRST | LAST, _VERSION, size, self.pid, self.boot, seq & 0xFFFFFFFF, 0) + payload
            )
            frame = _MAGIC + _CRC.pack(zlib.crc32(checked)) + checked
            try:
                os.write(self.write_fd, frame)
                self.sent += 1
                return True
            except (BlockingIOError, InterruptedError):
                frames = [frame]  # full: the policy below decides
            except OSError as exc:
                self._gone(exc)
                return False
        else:
            frames = framing.frames(0, self.pid, self.boot, seq, payload)
            if numbered:
                self._publish(seq + 1)  # a kill between its frames must not hide it
        deadline = 0.0
        for position, frame in enumerate(frames):
            while True:
                try:
                    os.write(self.write_fd, frame)
                    break
                except BlockingIOError:
                    # The first frame of a record below the keep level is
                    # dropped at once; anything else waits a bounded time.
                    if position == 0 and levelno < self.keep_level:
                        if numbered:
                            self._publish(seq + 1)
                        return False
                    now = time.monotonic()
                    if not deadline:
                        deadline = now + self.keep_wait
                        self.waited += 1
                    elif now >= deadline:
                        # A drop, counted here like any other, also when some
                        # of its frames are out: the master sets the
                        # unfinished record aside (incomplete_by_process), and
                        # its ledger, told of the drop, counts no loss.
                        if numbered:
                            self._publish(seq + 1)
                        return False
                    wait_writable(self.write_fd, deadline - now)
                except InterruptedError:
                    continue
                except OSError as exc:
                    self._gone(exc)
                    if numbered:
                        self._publish(seq + 1)
                    return position > 0
        self.sent += 1
        return True

    def _gone(self, exc: OSError) -> None:
        if exc.errno in (errno.EPIPE, errno.EBADF):
            self.hub_gone = True  # the master closed its end, or this process's hub stopped

    def _send_drops(self, counts: Dict[str, int]) -> bool:
        """The drop counts as one control frame (H27: an application's record can never pass for one)."""
        return self.send_control(encode_drops(counts), 0.0, NO_SEQ)

    def send_control(self, payload: bytes, timeout: float, seq: int = 0) -> bool:
        """Send a control frame to the reader (the stop marker, drop counts), waiting up to ``timeout``."""
        deadline = time.monotonic() + timeout
        frame = framing.frames(CONTROL, self.pid, self.boot, seq, payload)[0]
        while True:
            try:
                os.write(self.write_fd, frame)
                return True
            except (BlockingIOError, InterruptedError):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                wait_writable(self.write_fd, min(remaining, 0.05))
            except OSError as exc:
                self._gone(exc)
                return False

    def close(self) -> None:
        """Close this process's descriptors. Only the owner calls this, at the very end."""
        for release in (self._release, self._release_given):
            if release is not None:
                release.detach()
        for fd in (self.read_fd, self.write_fd, self.register_fd):
            if fd is not None and fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        if self.registrations is not None:
            with contextlib.suppress(OSError):
                self.registrations.close()
            self.registrations = None
        self.read_fd = None
        self.write_fd = self.register_fd = -1
        self._slot = -1
        for board in (self.scoreboard, self.board):
            if board is not None:
                board.close()
        self.scoreboard = self.board = None
