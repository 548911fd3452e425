"""RELP's framing and client session (forklog._master.relp), on bytes rsyslog 8.2302 (librelp 1.11) sent.

The peer in the session tests is a socket this test drives by hand: it
plays a server that misbehaves in ways a real rsyslogd cannot be made to
(answers out of order, never answers). tests/integration/test_relp.py runs
the sink against the real rsyslogd.
"""

from __future__ import annotations

import socket
import threading
from typing import Iterator, List, Tuple

import pytest

from forklog._master import relp
from forklog._master.relp import Frame, FrameParser, RelpClient, RelpError, frame

#: What rsyslogd 8.2302.0 (imrelp, librelp 1.11.0) answered to forklog's open, a message, and close.
OPEN_ANSWER = (
    b"1 rsp 93 200 OK\nrelp_version=0\nrelp_software=librelp,1.11.0,http://librelp.adiscon.com\n"
    b"commands=syslog\n"
)
SYSLOG_ANSWER = b"2 rsp 6 200 OK\n"
CLOSE_ANSWER = b"3 rsp 0\n0 serverclose 0\n"


def test_frames_are_txnr_command_datalen_data_lf() -> None:
    """A frame is TXNR SP COMMAND SP DATALEN [SP DATA] LF; no data, no SP after the length."""
    assert frame(2, b"syslog", b"<14>1 - h a 1 - - hi") == b"2 syslog 20 <14>1 - h a 1 - - hi\n"
    assert frame(3, b"close") == b"3 close 0\n"
    assert frame(1, b"open", relp.OFFERS) == (
        b"1 open 52 relp_version=0\nrelp_software=forklog\ncommands=syslog\n"
    )


def test_the_parser_reads_rsyslogs_answers_whole_or_a_byte_at_a_time() -> None:
    """rsyslog's answers parse the same fed at once or one byte at a time; data may hold LFs."""
    stream = OPEN_ANSWER + SYSLOG_ANSWER + CLOSE_ANSWER
    expected = [
        Frame(1, b"rsp", OPEN_ANSWER[len(b"1 rsp 93 ") : -1]),
        Frame(2, b"rsp", b"200 OK"),
        Frame(3, b"rsp", b""),
        Frame(0, b"serverclose", b""),
    ]
    assert FrameParser().feed(stream) == expected
    parser = FrameParser()
    assert [found for i in range(len(stream)) for found in parser.feed(stream[i : i + 1])] == expected
    assert relp.status(expected[0].data) == 200 and relp.status(b"") == 0


@pytest.mark.parametrize(
    "data",
    [
        b"x rsp 0\n",  # a transaction number that is not a number
        b"1234567890 rsp 0\n",  # ten digits
        b"1 r5p 0\n",  # a command that is not letters
        b"1 rsp 3 abcd\n",  # the length is wrong: no LF where it says
        b"1 rsp 3abc\n",  # no SP before the data
        b"1 rsp 0 \n",  # no LF after a frame without data
        b"1 rsp 70000 " + b"x" * 10,  # more data than an answer may carry
        b"garbage without any space at all, longer than any header can be",
    ],
)
def test_a_malformed_frame_is_a_protocol_error(data: bytes) -> None:
    """The parser refuses what is not a RELP frame, at once (the sink then drops the connection)."""
    with pytest.raises(RelpError):
        FrameParser().feed(data)


@pytest.fixture
def pair() -> Iterator[Tuple[socket.socket, socket.socket]]:
    """A connected stream pair: (client's end, the hand-driven server's end)."""
    client, server = socket.socketpair()
    try:
        yield client, server
    finally:
        client.close()
        server.close()


def read_frames(sock: socket.socket, count: int) -> List[Frame]:
    """Read until ``count`` frames came from the client."""
    parser = FrameParser(max_data=1 << 20)
    frames: List[Frame] = []
    while len(frames) < count:
        data = sock.recv(65536)
        assert data, "the client closed"
        frames += parser.feed(data)
    return frames


def test_open_needs_the_syslog_command_in_the_servers_offers(
    pair: Tuple[socket.socket, socket.socket],
) -> None:
    """A server that does not offer commands=syslog is refused; rsyslog's answer is taken."""
    client_end, server_end = pair
    server_end.sendall(
        b"1 rsp 16 200 OK\nrelp_version=0\n".replace(b"16", b"%d" % len(b"200 OK\nrelp_version=0"))
    )
    with pytest.raises(RelpError, match="does not take syslog"):
        RelpClient(client_end, timeout=2).open()
    assert read_frames(server_end, 1)[0].command == b"open"
    server_end.sendall(OPEN_ANSWER.replace(b"1 rsp", b"2 rsp"))
    session = RelpClient(client_end, timeout=2)
    session._txnr = 1  # the second open of this connection: txnr 2
    session.open()


def test_send_keeps_at_most_a_window_unanswered(pair: Tuple[socket.socket, socket.socket]) -> None:
    """With the server silent, exactly `window` messages go out; then a timeout, nothing answered."""
    client_end, server_end = pair
    session = RelpClient(client_end, timeout=0.3, window=4)
    with pytest.raises(TimeoutError):
        session.send([b"m%d" % i for i in range(10)])
    assert (session.answered, session.sent) == (0, 4)
    sent = read_frames(server_end, 4)
    assert [(f.txnr, f.command, f.data) for f in sent] == [(i + 1, b"syslog", b"m%d" % i) for i in range(4)]
    client_end.setblocking(False)
    server_end.setblocking(False)
    with pytest.raises(BlockingIOError):
        server_end.recv(1)  # nothing beyond the window


def test_answers_in_order_deliver_a_500_is_refused_out_of_order_is_an_error(
    pair: Tuple[socket.socket, socket.socket],
) -> None:
    """Each 200 counts as answered, a 500 is named refused; an answer to the wrong txnr breaks the session."""
    client_end, server_end = pair

    def serve(answers: List[bytes]) -> None:
        frames = read_frames(server_end, len(answers))
        server_end.sendall(b"".join(frame(f.txnr, b"rsp", a) for f, a in zip(frames, answers, strict=False)))

    server = threading.Thread(target=serve, args=([b"200 OK", b"500 no", b"200 OK"],))
    server.start()
    session = RelpClient(client_end, timeout=5, window=8)
    assert session.send([b"a", b"b", b"c"]) == [1]
    server.join()
    assert (session.answered, session.sent) == (3, 3)

    def serve_wrong() -> None:
        frames = read_frames(server_end, 2)
        server_end.sendall(frame(frames[1].txnr, b"rsp", b"200 OK"))

    server = threading.Thread(target=serve_wrong)
    server.start()
    with pytest.raises(RelpError, match="expected"):
        session.send([b"d", b"e"])
    server.join()
    assert session.answered == 0


def test_serverclose_and_end_of_file_end_the_session(pair: Tuple[socket.socket, socket.socket]) -> None:
    """The hint serverclose (txnr 0) or a closed connection is seen between sends, and in a send."""
    client_end, server_end = pair
    session = RelpClient(client_end, timeout=2)
    session.check_idle()  # nothing sent by the server: still open
    server_end.sendall(b"0 serverclose 0\n")
    with pytest.raises(RelpError, match="serverclose"):
        session.check_idle()
    assert session.closed_by_server
    other = RelpClient(client_end, timeout=2)
    server_end.close()
    with pytest.raises(OSError):
        other.send([b"x"])


def test_answers_that_come_with_serverclose_count_then_the_session_ends(
    pair: Tuple[socket.socket, socket.socket],
) -> None:
    """rsyslog on TERM writes its last answers and serverclose together: those answers count."""
    client_end, server_end = pair

    def serve() -> None:
        frames = read_frames(server_end, 3)
        server_end.sendall(
            frame(frames[0].txnr, b"rsp", b"200 OK")
            + frame(frames[1].txnr, b"rsp", b"200 OK")
            + b"0 serverclose 0\n"
        )

    server = threading.Thread(target=serve)
    server.start()
    session = RelpClient(client_end, timeout=5, window=8)
    with pytest.raises(RelpError, match="serverclose"):
        session.send([b"a", b"b", b"c"])
    server.join()
    assert (session.answered, session.sent) == (2, 3) and session.closed_by_server


def test_a_500_then_the_end_of_the_session_keeps_the_refusal(
    pair: Tuple[socket.socket, socket.socket],
) -> None:
    """librelp answers 500 and drops the session: the refused message is known after the failure."""
    client_end, server_end = pair

    def serve() -> None:
        frames = read_frames(server_end, 2)
        server_end.sendall(frame(frames[0].txnr, b"rsp", b"500 command disabled"))
        server_end.shutdown(socket.SHUT_WR)

    server = threading.Thread(target=serve)
    server.start()
    session = RelpClient(client_end, timeout=5, window=8)
    with pytest.raises(RelpError):
        session.send([b"a", b"b"])
    server.join()
    assert (session.answered, session.refused, session.sent) == (1, [0], 2)


def test_a_session_never_wraps_its_transaction_numbers(pair: Tuple[socket.socket, socket.socket]) -> None:
    """librelp expects 1,000,000,000 after 999,999,999, not 1: a used-up session refuses to send."""
    client_end, _server_end = pair
    session = RelpClient(client_end, timeout=1)
    session._txnr = relp.MAX_TXNR - 2
    assert session.room() == 2
    with pytest.raises(RelpError, match="used up"):
        session.send([b"a", b"b", b"c"])
    assert session.sent == 0


def test_answers_waiting_behind_a_broken_send_count_as_answered(
    pair: Tuple[socket.socket, socket.socket],
) -> None:
    """rsyslog restarted: its last answers arrive just after a read, then the send breaks; they count.

    Counted as unanswered, those messages would be sent again on the next
    connection and arrive twice (seen in CI as one duplicate after a
    graceful rsyslogd restart). The server's side runs inside the client's
    read here, so the answers land exactly between that read and the send.
    """
    client_end, server_end = pair
    session = RelpClient(client_end, timeout=5, window=2)
    reads = 0
    read = session._read

    def read_then_server_answers_and_closes(deadline: float, quick: bool = True) -> List[Frame]:
        nonlocal reads
        reads += 1
        if reads == 1:
            frames = read_frames(server_end, 2)
            server_end.sendall(frame(frames[0].txnr, b"rsp", b"200 OK"))
        answers = read(deadline, quick)
        if reads == 1:
            server_end.sendall(frame(frames[1].txnr, b"rsp", b"200 OK") + b"0 serverclose 0\n")
            server_end.close()
        return answers

    session._read = read_then_server_answers_and_closes  # type: ignore[method-assign]
    with pytest.raises(OSError):
        session.send([b"a", b"b", b"c", b"d"])
    assert (session.answered, session.sent) == (2, 3)
