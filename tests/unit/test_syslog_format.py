"""SyslogSink's RFC 5424 messages: header, severity, structured data, escaping, size; from_url."""

from __future__ import annotations

import logging
import re
import sys
from typing import Dict, NamedTuple, Tuple

import pytest

import forklog
from forklog import SyslogSink
from forklog import _wire as wire
from forklog._master.rfc5424 import facility_code, sd_escape, sd_name, severity
from forklog.syslog import DATAGRAM_MAX, STREAM_MAX

CREATED = 1_790_000_000.123456  # 2026-09-21T14:13:20.123456Z


class Message(NamedTuple):
    """One RFC 5424 message taken apart."""

    pri: int
    timestamp: str
    hostname: str
    app_name: str
    procid: str
    msgid: str
    sd: Dict[str, Dict[str, str]]
    msg: str


_HEADER = re.compile(r"<(\d{1,3})>1 (\S+) (\S+) (\S+) (\S+) (\S+) ")


def parse(line: str) -> Message:
    """Parse an RFC 5424 message (as sent, or as rsyslog writes it back); raise ValueError if malformed."""
    head = _HEADER.match(line)
    if head is None:
        raise ValueError(f"not an RFC 5424 header: {line[:120]!r}")
    sd, rest = parse_sd(line[head.end() :])
    pri, timestamp, hostname, app_name, procid, msgid = head.groups()
    return Message(int(pri), timestamp, hostname, app_name, procid, msgid, sd, rest)


def parse_sd(text: str) -> Tuple[Dict[str, Dict[str, str]], str]:
    """STRUCTURED-DATA at the start of ``text`` (unescaped), and what follows it (MSG)."""
    if text.startswith("-"):
        return {}, text[2:]
    elements: Dict[str, Dict[str, str]] = {}
    i = 0
    while i < len(text) and text[i] == "[":
        end = min(j for j in (text.find(" ", i), text.find("]", i)) if j >= 0)
        params = elements.setdefault(text[i + 1 : end], {})
        i = end
        while text[i] == " ":
            eq = text.index("=", i)
            name, i = text[i + 1 : eq], eq + 1
            if text[i] != '"':
                raise ValueError(f"unquoted value of {name!r}")
            value, i = [], i + 1
            while text[i] != '"':
                if text[i] == "\\" and text[i + 1] in '"\\]':
                    i += 1
                value.append(text[i])
                i += 1
            params[name] = "".join(value)
            i += 1
        if text[i] != "]":
            raise ValueError(f"structured data not closed at {i}: {text[: i + 20]!r}")
        i += 1
    if not elements:
        raise ValueError(f"no structured data: {text[:60]!r}")
    return elements, text[i + 1 :]


def crossed(
    msg: str = "hello", levelno: int = logging.INFO, exc: bool = False, **extra: object
) -> logging.LogRecord:
    """A record as the sink gets it: encoded in a worker (pid 4242), decoded in the master."""
    exc_info = None
    if exc:
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            exc_info = sys.exc_info()
    record = logging.LogRecord("app.db", levelno, "/x.py", 3, msg, (), exc_info)
    record.created = CREATED
    record.__dict__.update(extra)
    return wire.decode(wire.encode(record), 4242)


def sink(**options: object) -> SyslogSink:
    return SyslogSink(("127.0.0.1", 514), app_name="demo", hostname="web-1", **options)  # type: ignore[arg-type]


def message(record: logging.LogRecord, **options: object) -> Message:
    return parse(sink(**options).encode(record).decode("utf-8"))


def test_header_carries_priority_time_host_app_worker_pid_and_logger() -> None:
    """<PRI>1, the record's own time to the microsecond in UTC, host, app, the worker's pid, the logger."""
    data = sink(facility="local0").encode(crossed(levelno=logging.ERROR))
    assert data.startswith(b"<131>1 2026-09-21T14:13:20.123456Z web-1 demo 4242 app.db [forklog@32473 ")
    got = parse(data.decode())
    assert got.sd["forklog@32473"] == {"logger": "app.db", "level": "ERROR", "thread": "MainThread"}
    assert got.msg == "hello"


@pytest.mark.parametrize(
    ("levelno", "expected"),
    [(50, 2), (60, 2), (40, 3), (45, 3), (30, 4), (25, 5), (21, 5), (20, 6), (10, 7), (5, 7), (0, 7)],
)
def test_levels_map_to_severities(levelno: int, expected: int) -> None:
    """CRITICAL crit, ERROR err, WARNING warning, between INFO and WARNING notice, INFO info, below debug."""
    assert severity(levelno) == expected
    assert message(crossed(levelno=levelno), facility=0).pri == expected


def test_facilities_by_name_or_number_and_a_bad_one_is_named() -> None:
    """Names as in syslog(3) (any case) or 0-23; anything else raises with the value."""
    assert [facility_code(f) for f in ("kern", "USER", "daemon", "authpriv", "local0", "local7", 23)] == [
        0,
        1,
        3,
        10,
        16,
        23,
        23,
    ]
    assert message(crossed(levelno=logging.WARNING), facility="daemon").pri == 3 * 8 + 4
    for bad in ("local8", 24, -1, True, "loud"):
        with pytest.raises(ValueError, match=re.escape(f"facility={bad!r}")):
            sink(facility=bad)


def test_extras_and_bound_fields_are_structured_data_with_escaped_values() -> None:
    """Extras (context fields too) become SD-PARAMs; \\ " ] are escaped; non-strings are JSON."""
    record = logging.LogRecord("app", logging.INFO, "/x.py", 3, "m", (), None)
    with forklog.bound(request_id="r-42"):
        forklog.ContextFilter().filter(record)
    record.__dict__.update(path='C:\\tmp\\"x"]', count=3, ok=True, tags=["a", "]"], none=None)
    data = sink().encode(wire.decode(wire.encode(record), 7))
    assert b'path="C:\\\\tmp\\\\\\"x\\"\\]"' in data
    params = parse(data.decode()).sd["forklog@32473"]
    assert params["request_id"] == "r-42"
    assert params["path"] == 'C:\\tmp\\"x"]'
    assert (params["count"], params["ok"], params["tags"], params["none"]) == (
        "3",
        "true",
        '["a", "]"]',
        "null",
    )


def test_sd_names_and_msgid_follow_the_rfc_character_rules() -> None:
    """At most 32 printable US-ASCII characters, none of = ] " or space, in names and MSGID."""
    assert sd_name('a b=c]d"e') == "a_b_c_d_e"
    assert sd_name("é" * 40) == "_" * 32
    assert sd_name("") == "_"
    record = crossed()
    record.__dict__.update({"a b=c": 1, "x" * 40: 2, "ünï": 3})
    record.name = 'my app="x"]' + "y" * 40
    got = message(record)
    assert got.msgid == "my_app__x__" + "y" * 21
    assert set(got.sd["forklog@32473"]) >= {"a_b_c", "x" * 32, "_n_"}
    for name in [got.msgid, *got.sd["forklog@32473"]]:
        assert len(name) <= 32 and not set(name) & set(' ="]') and name.isascii() and name.isprintable()


def test_an_extra_named_like_the_sinks_own_params_is_kept_apart() -> None:
    """An extra called logger or level is written as extra.<name>; the record's own stay."""
    params = message(crossed(logger="spoof", level="fake")).sd["forklog@32473"]
    assert (params["logger"], params["level"]) == ("app.db", "INFO")
    assert (params["extra.logger"], params["extra.level"]) == ("spoof", "fake")


def test_escape_rules() -> None:
    r"""Backslash first, then the quote and the closing bracket; nothing else changes."""
    assert sd_escape('\\"]') == '\\\\\\"\\]'
    assert sd_escape("a\nb [ü]") == "a\nb [ü\\]"


def test_traceback_and_stack_stay_whole_inside_msg() -> None:
    """MSG is the message, then the traceback, then the stack, newlines kept: one message holds them."""
    record = crossed("line one\nline two", levelno=logging.ERROR, exc=True)
    record.stack_info = "Stack (most recent call last):\n  File x"
    got = message(record)
    lines = got.msg.split("\n")
    assert lines[:3] == ["line one", "line two", "Traceback (most recent call last):"]
    assert "RuntimeError: boom" in lines and lines[-2:] == ["Stack (most recent call last):", "  File x"]


def test_a_record_never_crossed_keeps_its_exc_info() -> None:
    """A record logged in the master itself (exc_info, no exc_text) gets its traceback formatted."""
    try:
        raise KeyError("k")
    except KeyError:
        record = logging.LogRecord("m", logging.ERROR, "/x.py", 1, "failed", (), sys.exc_info())
    assert "KeyError: 'k'" in message(record).msg


def test_a_formatter_makes_msg() -> None:
    """With a formatter, MSG is its output; the header and structured data stay."""
    s = sink()
    s.setFormatter(logging.Formatter("%(levelname)s|%(message)s"))
    got = parse(s.encode(crossed("hi")).decode())
    assert got.msg == "INFO|hi" and got.msgid == "app.db"


def test_a_long_message_is_cut_to_the_limit_with_a_marker() -> None:
    """A message over max_message_size is cut on a character boundary, with a visible marker."""
    data = sink(max_message_size=2000).encode(crossed("é" * 5000 + "END", levelno=logging.ERROR, exc=True))
    assert len(data) <= 2000
    text = data.decode("utf-8")  # still valid UTF-8
    assert re.search(r"\[forklog: truncated \d+ characters\]$", text)
    assert parse(text).sd["forklog@32473"]["level"] == "ERROR"


def test_huge_extras_are_left_out_and_said_so() -> None:
    """Extras that alone overflow the limit are dropped from the SD, with a note; the message stays."""
    data = sink(max_message_size=4096).encode(crossed("keep me", blob="x" * 10_000))
    assert len(data) <= 4096
    got = parse(data.decode())
    assert got.msg == "keep me" and "blob" not in got.sd["forklog@32473"]
    assert got.sd["forklog@32473"]["forklog_truncated"].startswith("extra fields dropped")


def test_default_limits_follow_the_transport() -> None:
    """1 MiB over TCP (the shipped rsyslog's maxMessageSize), 65,000 bytes in a datagram."""
    assert SyslogSink(("h", 1)).max_message_size == STREAM_MAX == 1 << 20
    assert SyslogSink(("h", 1), transport="udp").max_message_size == DATAGRAM_MAX < 65_507
    assert SyslogSink("/dev/log", transport="unix").max_message_size == DATAGRAM_MAX


def test_from_url() -> None:
    """tcp://, udp:// (port 514 by default, IPv6 in brackets) and unix:///path; options pass through."""
    s = SyslogSink.from_url("tcp://logs.example:6514", facility="local3", capacity=5)
    assert (s._host_port, s.transport, s.facility, s.capacity) == (("logs.example", 6514), "tcp", 19, 5)
    assert SyslogSink.from_url("udp://[::1]")._host_port == ("::1", 514)
    assert SyslogSink.from_url("unix:///dev/log")._path == "/dev/log"
    assert repr(SyslogSink.from_url("relp://h:2514")) == "<SyslogSink relp://h:2514 (NOTSET)>"
    assert repr(SyslogSink.from_url("UDP://h:1")) == "<SyslogSink udp://h:1 (NOTSET)>"


@pytest.mark.parametrize(
    "url",
    ["http://h:1", "tcp://", "tcp://h:99999", "tcp://h:1/x", "unix://", "h:514", "relp://h", "relp://h:1/x"],
)
def test_a_bad_url_names_itself(url: str) -> None:
    """A URL that is not tcp://host:port, udp://host:port or unix:///path raises with the URL."""
    with pytest.raises(ValueError, match=re.escape(repr(url))):
        SyslogSink.from_url(url)


@pytest.mark.parametrize(
    ("args", "kwargs", "named"),
    [
        ((("h", 1),), {"transport": "tls"}, "transport='tls'"),
        (("/dev/log",), {}, "address='/dev/log'"),
        ((("h", 1),), {"transport": "unix"}, "address=('h', 1)"),
        ((("h", 1),), {"sd_id": "bad id"}, "sd_id='bad id'"),
        ((("h", 1),), {"max_message_size": 100}, "max_message_size=100"),
        ((("h", 1),), {"timeout": 0}, "timeout=0"),
        ((("h", 1),), {"send_buffer": 100}, "send_buffer=100"),
        ((("h", 1),), {"capacity": 0}, "capacity=0"),
        ((("h", 1),), {"transport": "relp", "window": 0}, "window=0"),
    ],
)
def test_bad_options_fail_at_setup_naming_the_value(
    args: Tuple[object, ...], kwargs: Dict[str, object], named: str
) -> None:
    """Every bad option raises ValueError at construction, naming the key and the value."""
    with pytest.raises(ValueError, match=re.escape(named)):
        SyslogSink(*args, **kwargs)  # type: ignore[arg-type]
