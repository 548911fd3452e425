"""RELP, the Reliable Event Logging Protocol: the client side, for :class:`SyslogSink`.

Plain TCP syslog has no acknowledgement: what the kernel took is gone from
the sender, and what rsyslog had not read when it stopped is lost without a
trace. Over RELP (rsyslog's ``imrelp``) the server answers every message,
so the sender knows what was taken and sends the rest again on the next
connection. The protocol (librelp's ``doc/relp.md``) is small:

* every frame is ``TXNR SP COMMAND SP DATALEN [SP DATA] LF``; the client
  numbers its commands 1, 2, 3 ... up to 999,999,999 (librelp takes no
  wrap within a session: the sink opens a new one before);
* the session starts with ``open``, whose data are offers, one per line
  (``relp_version=0``, ``relp_software=..``, ``commands=syslog``); the
  server's ``rsp`` (``200 OK`` and its own offers) must name ``syslog``;
* each message is a ``syslog`` command; the server answers each with
  ``rsp`` ``200 OK`` (or ``500 ...``), in the order of the commands;
* up to a window of commands may wait for their answers (librelp's 128);
* ``close`` ends the session; the server may send the hint ``serverclose``
  (txnr 0, no answer) before it closes the connection itself.

RELP is at-least-once: a message the server took whose answer was lost with
the connection (a server SIGKILLed) is sent again, and arrives twice. At
most a window of messages can be sent again on each new connection; the
sink counts them (``SyslogSink.resent``).

This module never logs through :mod:`logging`: it runs inside the hub.
"""

from __future__ import annotations

import collections
import contextlib
import re
import socket
import time
from typing import Deque, List, NamedTuple, Optional, Sequence, Tuple

__all__ = ["WINDOW", "Frame", "FrameParser", "RelpClient", "RelpError", "frame"]

#: librelp's and rsyslog's default window of unanswered commands.
WINDOW = 128
#: Transaction numbers go from 1 to this, then start again at 1.
MAX_TXNR = 999_999_999
#: The most data an answer from the server may carry (its offers); more is a protocol error.
MAX_RESPONSE = 64 << 10
#: The offers forklog makes: RELP version 0 (librelp's), the syslog command.
OFFERS = b"relp_version=0\nrelp_software=forklog\ncommands=syslog"
#: Linux's TCP_QUICKACK (see RelpClient._read); None elsewhere.
_QUICKACK: Optional[int] = getattr(socket, "TCP_QUICKACK", None)


#: A whole header: the byte after it (the data's SP, or the LF) is there.
_HEADER = re.compile(rb"([0-9]{1,9}) ([A-Za-z]{1,32}) ([0-9]{1,9})(?=[ \n])")
#: The answer to nearly every message.
_OK_ANSWER = re.compile(rb"([0-9]{1,9}) rsp 6 200 OK\n")
#: What a header not yet whole may look like.
_HEADER_START = re.compile(rb"[0-9]{1,9}( ([A-Za-z]{1,32}( [0-9]{0,9})?)?)?|[0-9]{0,9}")


class RelpError(OSError):
    """The server broke the protocol, refused the session, or closed it."""


class Frame(NamedTuple):
    """One frame: its transaction number, command and data."""

    txnr: int
    command: bytes
    data: bytes


def frame(txnr: int, command: bytes, data: bytes = b"") -> bytes:
    """The bytes of one frame: ``TXNR SP COMMAND SP DATALEN [SP DATA] LF``."""
    if data:
        return b"%d %s %d %s\n" % (txnr, command, len(data), data)
    return b"%d %s 0\n" % (txnr, command)


class FrameParser:
    """Splits the bytes a server sends into frames; a malformed one raises :class:`RelpError`."""

    def __init__(self, max_data: int = MAX_RESPONSE) -> None:
        self._buffer = bytearray()
        self.max_data = max_data

    def feed(self, data: bytes) -> List[Frame]:
        """Add ``data``; the frames now complete, in order."""
        buffer = self._buffer
        buffer += data
        frames: List[Frame] = []
        pos = 0
        ok = _OK_ANSWER.match
        while True:
            plain = ok(buffer, pos)
            if plain is not None:  # the common answer, at a third of the cost
                frames.append(Frame(int(plain.group(1)), b"rsp", b"200 OK"))
                pos = plain.end()
                continue
            parsed = self._one(buffer, pos)
            if parsed is None:
                del buffer[:pos]
                return frames
            found, pos = parsed
            frames.append(found)

    def _one(self, buffer: bytearray, pos: int) -> Optional[Tuple[Frame, int]]:
        """The frame at ``pos`` in ``buffer`` and where it ends, or None if it is not whole yet."""
        head = _HEADER.match(buffer, pos)
        if head is None:
            # Not a whole header yet, or not a header at all: the longest one
            # is 9 + 1 + 32 + 1 + 9 bytes before the data's SP or the LF.
            if _HEADER_START.fullmatch(buffer[pos : pos + 53]) is None and len(buffer) > pos:
                raise RelpError(f"RELP: not a frame header: {bytes(buffer[pos : pos + 60])!r}")
            return None
        txnr, command, length_text = head.group(1, 2, 3)
        length = int(length_text)
        if length > self.max_data:
            raise RelpError(f"RELP: a frame of {length} bytes, more than {self.max_data}")
        end = head.end()
        if length == 0:
            if buffer[end] != 10:
                raise RelpError("RELP: no LF after a frame without data")
            return Frame(int(txnr), bytes(command), b""), end + 1
        if buffer[end] != 32:
            raise RelpError("RELP: no space before a frame's data")
        stop = end + 1 + length
        if len(buffer) <= stop:
            return None
        if buffer[stop] != 10:
            raise RelpError("RELP: no LF after a frame's data (its length is wrong)")
        return Frame(int(txnr), bytes(command), bytes(buffer[end + 1 : stop])), stop + 1


def status(data: bytes) -> int:
    """The code at the head of an answer's data (``200 OK`` is 200); 0 if there is none."""
    head = data[:3]
    return int(head) if len(head) == 3 and head.isdigit() else 0


class RelpClient:
    """One RELP session over a connected stream socket (the caller connects and closes it).

    :meth:`open` starts the session; :meth:`send` sends messages with up to
    ``window`` unanswered and returns when every one has its answer.
    """

    def __init__(self, sock: socket.socket, timeout: float, window: int = WINDOW) -> None:
        if window < 1:
            raise ValueError(f"forklog RELP: window={window!r}: expected at least 1")
        self.sock = sock
        self.timeout = timeout
        sock.settimeout(timeout)  # bounds every wait: a connect, a send, a read
        self.window = window
        self._parser = FrameParser()
        self._txnr = 0
        self._frames: List[Frame] = []
        self.closed_by_server = False
        #: The server's end of the session, seen with answers still to hand over.
        self._ended: Optional[RelpError] = None
        #: Of the messages given to the last :meth:`send`: how many the server
        #: answered (the first ones: answers come in order), and how many it
        #: was sent. Read after a failure: the answered ones are delivered,
        #: the sent ones beyond them may have arrived.
        self.answered = 0
        self.sent = 0
        #: Of those answered, the indexes of the ones the server refused (500).
        self.refused: List[int] = []

    def _next_txnr(self) -> int:
        self._txnr += 1
        return self._txnr

    def open(self) -> None:
        """Send ``open`` and check the server's offers: it must take ``syslog``."""
        txnr = self._next_txnr()
        self.sock.sendall(frame(txnr, b"open", OFFERS))
        answer = self._answer(txnr, time.monotonic() + self.timeout)
        if status(answer.data) != 200:
            raise RelpError(f"RELP: the server refused the session: {_text(answer.data)}")
        offers = answer.data.split(b"\n")[1:]
        if not any(offer.startswith(b"relp_version=") for offer in offers):
            raise RelpError(f"RELP: the server named no relp_version: {_text(answer.data)}")
        commands = [offer.partition(b"=")[2] for offer in offers if offer.startswith(b"commands=")]
        if not any(b"syslog" in value.split(b",") for value in commands):
            raise RelpError(f"RELP: the server does not take syslog messages: {_text(answer.data)}")

    def send(self, messages: Sequence[bytes]) -> List[int]:
        """Send each message as a ``syslog`` command; the indexes of those the server refused.

        Returns once every message has its answer. Raises ``OSError`` (the
        connection broke, or the server was silent for ``timeout``) or
        :class:`RelpError`; :attr:`answered`, :attr:`refused` and
        :attr:`sent` then say how far it got (a message counts as sent
        once any of its bytes may have left).
        """
        if self.room() < len(messages):
            # librelp takes no wrap of the number within a session (it expects
            # 1,000,000,000 after 999,999,999): the caller starts a new one.
            raise RelpError("RELP: the session's transaction numbers are used up")
        self.answered = self.sent = 0
        self.refused = []
        waiting: Deque[int] = collections.deque()  # the txnrs sent and not answered, in order
        count = len(messages)
        while self.answered < count:
            room = self.window - len(waiting)
            if room and self.sent < count:
                chunk = []
                for message in messages[self.sent : self.sent + room]:
                    txnr = self._next_txnr()
                    waiting.append(txnr)
                    chunk.append(frame(txnr, b"syslog", message))
                self.sent += len(chunk)
                try:
                    self._send_all(b"".join(chunk))
                except OSError:
                    # A server ending the session (rsyslog restarted) answers
                    # what it took, then closes: those answers may wait unread
                    # behind the broken send. Counted as answered, they are
                    # not sent again on the next connection.
                    self._take(self._pending(), waiting)
                    raise
            # Nothing more to send before answers come: acknowledge them at once (see _read).
            quick = self.sent == count or len(waiting) >= self.window
            self._take(self._read(time.monotonic() + self.timeout, quick), waiting)
        return self.refused

    def _take(self, answers: List[Frame], waiting: Deque[int]) -> None:
        """Match ``answers`` to the transactions ``waiting``, in order, and count them."""
        for found in answers:
            if not waiting or found.txnr != waiting[0]:
                expected = waiting[0] if waiting else "none"
                raise RelpError(f"RELP: an answer to {found.txnr}, expected {expected}")
            waiting.popleft()
            if status(found.data) != 200:
                self.refused.append(self.answered)
            self.answered += 1

    def _pending(self) -> List[Frame]:
        """The answers already received and not yet read, without waiting for more."""
        answers: List[Frame] = []
        self.sock.setblocking(False)
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    break
                answers.extend(found for found in self._parser.feed(data) if found.command == b"rsp")
        except OSError:
            # Nothing more (BlockingIOError), the connection's error (raised
            # anyway), or a garbled tail (RelpError): what was whole is kept.
            pass
        finally:
            self.sock.settimeout(self.timeout)
        return answers

    def room(self) -> int:
        """How many more commands this session can number."""
        return MAX_TXNR - self._txnr

    def _send_all(self, data: bytes) -> None:
        """Send ``data``; ``timeout`` bounds each wait for progress, not the whole window."""
        view = memoryview(data)
        while view:
            view = view[self.sock.send(view[: 1 << 20]) :]

    def close(self) -> None:
        """End the session politely: ``close``, and its answer awaited at most ``timeout``."""
        if self.closed_by_server or not self.room():
            return
        txnr = self._next_txnr()
        self.sock.settimeout(self.timeout)
        self._send_all(frame(txnr, b"close"))
        self._answer(txnr, time.monotonic() + self.timeout)

    def check_idle(self) -> None:
        """Between sends: read what an idle server sent (its ``serverclose`` hint, or end of file)."""
        self.sock.setblocking(False)
        try:
            data = self.sock.recv(65536)
        except BlockingIOError:
            return
        finally:
            self.sock.settimeout(self.timeout)
        if not data:
            self.closed_by_server = True
            raise RelpError("RELP: the server closed the connection")
        for found in self._parser.feed(data):
            self._hint_or_stray(found)

    def _hint_or_stray(self, found: Frame) -> None:
        if found.txnr == 0 and found.command == b"serverclose":
            self.closed_by_server = True
            raise RelpError("RELP: the server closed the session (serverclose)")
        if found.txnr != 0:
            raise RelpError(f"RELP: an answer to {found.txnr}, none awaited")
        # Another hint: nothing to do.

    def _answer(self, txnr: int, deadline: float) -> Frame:
        while True:
            for found in self._read(deadline):
                if found.txnr == txnr and found.command == b"rsp":
                    return found
                raise RelpError(f"RELP: an answer to {found.txnr}, expected {txnr}")

    def _read(self, deadline: float, quick: bool = True) -> List[Frame]:
        """The next answers (hints handled), waiting until ``deadline`` for at least one.

        Answers that came with the server's ``serverclose`` (rsyslog sends
        its last answers, then the hint) are returned first; the session's
        end is raised on the next read.
        """
        if self._ended is not None:
            raise self._ended
        while True:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"RELP: no answer in {self.timeout} s")
            # The socket's own timeout (``timeout``) bounds each wait: setting
            # it to what is left before each read cost two system calls a read.
            try:
                data = self.sock.recv(65536)
            except TimeoutError as exc:
                raise TimeoutError(f"RELP: no answer in {self.timeout} s") from exc
            if quick and _QUICKACK is not None:
                # rsyslog writes each answer on its own; under Nagle it holds
                # the next ones until this end acknowledges the first, which
                # Linux delays up to 40 ms when this end sends nothing meanwhile
                # (the window full, or the batch all sent): 128 answers took
                # 42 ms, not 1. While frames go out they carry the
                # acknowledgement, and an extra packet a read would cost more.
                with contextlib.suppress(OSError):
                    self.sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
            if not data:
                self.closed_by_server = True
                raise RelpError("RELP: the server closed the connection")
            answers = []
            for found in self._parser.feed(data):
                if found.txnr == 0:
                    try:
                        self._hint_or_stray(found)
                    except RelpError as exc:
                        self._ended = exc
                        break
                elif found.command != b"rsp":
                    raise RelpError(f"RELP: a {_text(found.command)!r} command from the server")
                else:
                    answers.append(found)
            if answers:
                return answers
            if self._ended is not None:
                raise self._ended


def _text(data: bytes) -> str:
    return data[:200].decode("ascii", "backslashreplace").replace("\n", " | ")
