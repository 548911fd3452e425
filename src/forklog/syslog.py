"""A syslog sink: RFC 5424 messages over TCP, RELP, UDP or a unix socket.

Runs in the master, in its own thread (a :class:`BufferedSink`): a syslog
server that stops answering fills this sink's bounded buffer, never the
files'. What the buffer cannot hold is dropped and counted; the hub reports
it in the log and in ``stats().dropped_by_sink``.

Each record becomes one RFC 5424 message (:mod:`forklog._master.rfc5424`).
Over TCP messages are framed by octet counting (RFC 6587, ``LEN SP MSG``):
stdlib ``SysLogHandler`` sends ``MSG NUL``, which receivers either merge or
split at a traceback's newlines. Over RELP (:mod:`forklog._master.relp`) the
server answers every message: what it did not answer is sent again on the
next connection.

This module never logs through :mod:`logging`: it runs inside the hub, and
a record about a failure would come back to it.
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import logging
import os
import socket
import sys
import urllib.parse
import weakref
from typing import Any, Dict, List, Optional, Tuple, Union

from forklog import _fork
from forklog._master.buffered import BufferedSink, DeliveryError
from forklog._master.relp import WINDOW, RelpClient
from forklog._master.rfc5424 import DEFAULT_SD_ID, FACILITIES, Rfc5424, facility_code, header_field, sd_name

__all__ = ["FACILITIES", "SyslogSink"]

TRANSPORTS = ("tcp", "relp", "udp", "unix")
#: One datagram: under UDP's 65,507-byte limit.
DATAGRAM_MAX = 65_000
#: One message over a stream: deploy/rsyslog/forklog.conf's maxMessageSize (1m).
STREAM_MAX = 1 << 20
#: A TCP connection's send buffer (Linux doubles it): 1-2 thousand typical
#: records, where the kernel's autotuning lets a stalled server swallow ~15,000.
SEND_BUFFER = 256 << 10

Address = Union[Tuple[str, int], str, "os.PathLike[str]"]


class SyslogSink(BufferedSink, Rfc5424):
    """Send records to a syslog server as RFC 5424 messages.

    ``address`` is ``(host, port)`` for ``transport="tcp"``, ``"relp"`` or
    ``"udp"``, a socket path for ``"unix"`` (a datagram socket like
    ``/dev/log``, or a stream socket, found when connecting). :meth:`from_url`
    takes ``tcp://host:port``, ``relp://host:port``, ``udp://host:port`` or
    ``unix:///path``.

    Over RELP (rsyslog's ``imrelp``) every message is answered, up to
    ``window`` at a time; after a broken connection what was not answered is
    sent again, and a message the server took whose answer was lost arrives
    twice (at most ``window`` a connection, counted in :attr:`resent`).

    ``facility`` is a name (``"local0"``) or a number; ``app_name`` defaults
    to the program's name, ``hostname`` to this machine's. A message longer
    than ``max_message_size`` bytes has its text cut with a visible marker
    (default: 1 MiB over a stream, 65,000 bytes in a datagram); match your
    receiver's ``maxMessageSize``. ``timeout`` bounds a connection attempt
    and a blocked send. ``send_buffer`` caps the kernel's send buffer of a
    TCP connection (``None``: the kernel's own, up to megabytes): what a
    server that accepts but stops reading can swallow before the sink
    notices, records then lost uncounted. A failed delivery is retried with a backoff up to
    ``max_backoff`` seconds; meanwhile records wait in a buffer of
    ``capacity``, and what does not fit is dropped and counted.
    """

    def __init__(
        self,
        address: Address,
        *,
        transport: str = "tcp",
        facility: Union[str, int] = "user",
        app_name: Optional[str] = None,
        hostname: Optional[str] = None,
        sd_id: str = DEFAULT_SD_ID,
        max_message_size: Optional[int] = None,
        timeout: float = 5.0,
        send_buffer: Optional[int] = SEND_BUFFER,
        level: int = logging.NOTSET,
        capacity: int = 10_000,
        batch_size: int = 256,
        close_timeout: float = 5.0,
        max_backoff: float = 5.0,
        window: int = WINDOW,
    ) -> None:
        super().__init__(
            level,
            capacity=capacity,
            batch_size=batch_size,
            close_timeout=close_timeout,
            max_backoff=max_backoff,
        )
        if transport not in TRANSPORTS:
            raise ValueError(f"forklog.SyslogSink: transport={transport!r}: expected one of {TRANSPORTS}")
        self._path: Optional[str] = None
        self._host_port: Optional[Tuple[str, int]] = None
        if transport == "unix" and isinstance(address, (str, os.PathLike)) and os.fspath(address):
            self._path = os.fspath(address)
        elif (
            transport != "unix"
            and isinstance(address, tuple)
            and len(address) == 2
            and isinstance(address[1], int)
        ):
            self._host_port = (str(address[0]), address[1])
        if (self._path or self._host_port) is None:
            wanted = "a socket path" if transport == "unix" else "(host, port)"
            raise ValueError(f"forklog.SyslogSink: address={address!r}: expected {wanted} for {transport}")
        if sd_name(sd_id) != sd_id or "@" not in sd_id:
            raise ValueError(f"forklog.SyslogSink: sd_id={sd_id!r}: expected name@number, as in RFC 5424")
        if timeout <= 0:
            raise ValueError(f"forklog.SyslogSink: timeout={timeout!r}: expected seconds > 0")
        limit = max_message_size or (STREAM_MAX if transport in ("tcp", "relp") else DATAGRAM_MAX)
        if limit < 480:  # RFC 5424 6.1: every receiver takes 480 octets
            raise ValueError(f"forklog.SyslogSink: max_message_size={limit!r}: expected at least 480")
        self.address = address
        self.transport = transport
        self.facility = facility_code(facility)
        self.app_name = header_field(app_name or os.path.basename(sys.argv[0] or "") or "python", 48)
        self.hostname = header_field(hostname or socket.gethostname(), 255)
        self.sd_id = sd_id
        self.max_message_size = limit
        self._user_limit = max_message_size is not None
        self.timeout = timeout
        if send_buffer is not None and send_buffer < 4096:
            raise ValueError(
                f"forklog.SyslogSink: send_buffer={send_buffer!r}: expected at least 4096, or None"
            )
        self.send_buffer = send_buffer
        if window < 1:
            raise ValueError(f"forklog.SyslogSink: window={window!r}: expected at least 1")
        self.window = window
        #: RELP: messages sent again after a broken connection (each may
        #: have arrived twice: the server took it, its answer was lost).
        self.resent = 0
        if self.transport == "relp":
            self.again_note = "one the server took before the break may arrive twice, counted in stats resent"
        self._relp: Optional[RelpClient] = None
        self._relp_broken = False
        # RELP: records sent on a connection that broke before their answer, by id.
        self._maybe_arrived: Dict[int, logging.LogRecord] = {}
        self._sock: Optional[socket.socket] = None
        self._stream = transport == "tcp"
        self._second = -1
        self._stamp = ""
        self._msgids: Dict[str, str] = {}
        self.set_name("syslog")
        _live_sinks.add(self)
        _install_fork_hook()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> SyslogSink:
        """``tcp://host:port``, ``udp://host:port`` (port 514 if left out), ``relp://host:port`` or ``unix:///path``."""
        parts = urllib.parse.urlsplit(url)
        scheme = parts.scheme.lower()
        expected = "expected tcp://host:port, relp://host:port, udp://host:port or unix:///path"
        if scheme == "unix":
            path = parts.netloc + parts.path
            if not path:
                raise ValueError(f"forklog.SyslogSink: {url!r}: {expected}")
            return cls(path, transport="unix", **options)
        try:
            port = parts.port or (0 if scheme == "relp" else 514)
        except ValueError:
            raise ValueError(f"forklog.SyslogSink: {url!r}: a bad port; {expected}") from None
        if scheme == "relp" and not port:
            raise ValueError(f"forklog.SyslogSink: {url!r}: RELP has no standard port; {expected}")
        if scheme not in ("tcp", "relp", "udp") or not parts.hostname or parts.path not in ("", "/"):
            raise ValueError(f"forklog.SyslogSink: {url!r}: {expected}")
        return cls((parts.hostname, port), transport=scheme, **options)

    # -- the sink's thread -----------------------------------------------------

    def deliver(self, records: List[logging.LogRecord]) -> None:
        if self.transport == "relp":
            self._deliver_relp(records)
            return
        sock = self._sock
        if sock is None or (self._stream and _peer_closed(sock, self.timeout)):
            # A server that closed our idle connection (restarted, idle
            # timeout): a write would vanish into the dead socket.
            self.disconnect()
            sock = self._connect()
        ends: List[int] = []
        frames: List[bytes] = []
        size = 0
        for record in records:  # the filters ran once, when the batch was taken (BufferedSink._admit)
            data = self._encode_safely(record)
            frame = b"%d %s" % (len(data), data) if self._stream else data
            frames.append(frame)
            size += len(frame)
            ends.append(size)
        if self._stream:
            self._send_stream(sock, frames, ends)
        else:
            self._send_datagrams(sock, frames, ends)

    def _deliver_relp(self, records: List[logging.LogRecord]) -> None:
        client = self._relp
        if client is not None and client.room() <= len(records):
            self.disconnect()  # its numbers are used up: close it, open another
            client = None
        if client is not None:
            try:
                client.check_idle()  # a restarted server: its hint, or end of file, waits here
            except OSError:
                self._relp_broken = True
                self.disconnect()
                client = None
        if client is None:
            client = self._connect_relp()
        # The filters ran once, when the batch was taken (BufferedSink._admit).
        messages = [self._encode_safely(record) for record in records]
        try:
            client.send(messages)
        except OSError as exc:
            self._relp_broken = True
            self._settle_relp(records, client)
            raise DeliveryError(f"syslog {self._where()}: {exc}", client.answered) from exc
        self._settle_relp(records, client)

    def _settle_relp(self, records: List[logging.LogRecord], client: RelpClient) -> None:
        """After a send, whole or cut short: count what went out again, and what the server refused.

        A record sent on a connection that broke before its answer may have
        arrived: until it is answered it stays in ``_maybe_arrived``, and
        each later send of it counts in :attr:`resent`.
        """
        maybe = self._maybe_arrived
        if maybe:
            self.resent += sum(id(record) in maybe for record in records[: client.sent])
        if client.answered == len(records):
            maybe.clear()  # whatever else was in it was dropped, not sent again
        else:
            for record in records[: client.answered]:
                maybe.pop(id(record), None)
            maybe.update((id(record), record) for record in records[client.answered : client.sent])
        for index in client.refused:
            # The server answered 500 (librelp then ends the session): sent
            # again, it would be refused again. Counted, never delivered.
            try:
                raise DeliveryError(f"syslog {self._where()}: the server refused a message")
            except DeliveryError:
                self.failures += 1
                self._report_failure(records[index])
            with self._cond:
                self._count_drop(records[index])
        self.delivered -= len(client.refused)  # BufferedSink counts them with the answered

    def _connect_relp(self) -> RelpClient:
        sock = self._connect()
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            # Frames go out as they are made, answers come back small:
            # Nagle's delay would hold each top-up of the window.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client = RelpClient(sock, self.timeout, self.window)
        try:
            client.open()
        except OSError as exc:
            self.disconnect()
            raise DeliveryError(f"syslog {self._where()}: cannot open a RELP session: {exc}") from exc
        self._relp, self._relp_broken = client, False
        return client

    def _send_stream(self, sock: socket.socket, frames: List[bytes], ends: List[int]) -> None:
        data = memoryview(b"".join(frames))
        sent = 0
        try:
            while sent < len(data):
                sent += sock.send(data[sent : sent + (1 << 20)])
        except OSError as exc:
            # The records whose last byte the kernel took count as sent; the
            # rest go again, whole, on a new connection.
            raise DeliveryError(f"syslog {self._where()}: {exc}", bisect.bisect_right(ends, sent)) from exc

    def _send_datagrams(self, sock: socket.socket, frames: List[bytes], ends: List[int]) -> None:
        sent = 0
        try:
            for frame in frames:
                sock.send(frame)
                sent += len(frame)
        except OSError as exc:
            raise DeliveryError(f"syslog {self._where()}: {exc}", bisect.bisect_right(ends, sent)) from exc

    def _connect(self) -> socket.socket:
        try:
            if self._path is not None:
                sock = self._connect_unix(self._path)
            elif self.transport in ("tcp", "relp"):
                sock = socket.create_connection(self._host_port or ("", 0), timeout=self.timeout)
                if self.send_buffer is not None and self.transport == "tcp":
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.send_buffer)
            else:
                host, port = self._host_port or ("", 0)
                family, kind, proto, _name, addr = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
                sock = socket.socket(family, kind, proto)
                sock.settimeout(self.timeout)
                try:
                    sock.connect(addr)  # later sends learn of an unreachable port
                except OSError:
                    sock.close()
                    raise
        except OSError as exc:
            raise DeliveryError(f"syslog {self._where()}: cannot connect: {exc}") from exc
        sock.settimeout(self.timeout)
        self._sock = sock
        return sock

    def _connect_unix(self, path: str) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(path)
            self._stream = False
            return sock
        except OSError as exc:
            sock.close()
            if exc.errno != errno.EPROTOTYPE:
                raise
        # A stream socket (syslog-ng's unix-stream, rsyslog's imptcp path=): octet counting.
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(path)
        except OSError:
            sock.close()
            raise
        self._stream = True
        if not self._user_limit:
            self.max_message_size = STREAM_MAX
        return sock

    def disconnect(self) -> None:
        sock, self._sock = self._sock, None
        client, self._relp = self._relp, None
        if client is not None and not self._relp_broken and not client.closed_by_server:
            # A session ended by us (the sink closes): RELP's close, briefly.
            client.timeout = min(client.timeout, 1.0)
            with contextlib.suppress(OSError):
                client.close()
        if sock is not None:
            if client is not None:
                # The connection itself, not this descriptor: a worker forked
                # meanwhile may hold a copy, and the server must see the end.
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    @property
    def destination(self) -> str:
        """Where the messages go, as the setting gives it: ``relp://127.0.0.1:2514``."""
        return self._where()

    def _where(self) -> str:
        if self._path is not None:
            return f"unix:{self._path}"
        host, port = self._host_port or ("", 0)
        return f"{self.transport}://{host}:{port}"

    def __repr__(self) -> str:
        return f"<SyslogSink {self._where()} ({logging.getLevelName(self.level)})>"


def _peer_closed(sock: socket.socket, timeout: float) -> bool:
    """Whether the other end of an idle stream closed it (a peek reads end-of-file) or reset it."""
    try:
        sock.setblocking(False)
        try:
            return sock.recv(1, socket.MSG_PEEK) == b""
        finally:
            sock.settimeout(timeout)
    except BlockingIOError:
        return False  # nothing to read: open
    except OSError:
        return True


#: The sinks of this process, for the fork hook (weak: a closed sink goes away).
_live_sinks: weakref.WeakSet[SyslogSink] = weakref.WeakSet()


def _close_in_child() -> None:
    # A forked worker must not hold the master's connection open: the
    # server would keep a session that no one writes to, and would not see
    # the master's close. Closing the child's copy of the descriptor leaves
    # the master's connection as it is.
    for sink in list(_live_sinks):
        sink._relp = None
        sock, sink._sock = sink._sock, None
        if sock is not None:
            sock.close()


def _install_fork_hook() -> None:
    # On the first sink, not at import.
    _fork.on_fork(after_in_child=_close_in_child)
