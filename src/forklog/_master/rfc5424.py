"""RFC 5424 syslog messages made from log records, for :class:`forklog.SyslogSink`.

Each record becomes one message::

    <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [SD-ID logger=".." level=".." ...] MSG

with the record's own time (to the microsecond) and pid (the worker's, not
the master's), the logger as MSGID, the extras and bound context fields as
structured data, and the traceback and stack inside MSG, so a receiver gets
them whole in one message. MSG carries no UTF-8 BOM, though RFC 5424 asks
for one: rsyslog and journald keep it as part of the text.
"""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Dict, Optional, Union

from forklog._wire import cut_text, extra_fields, merged_message, safe_repr

__all__ = [
    "DEFAULT_SD_ID",
    "FACILITIES",
    "Rfc5424",
    "facility_code",
    "header_field",
    "sd_escape",
    "sd_name",
    "sd_value",
    "severity",
]

#: RFC 5424 table 1, by the names of syslog(3).
FACILITIES: Dict[str, int] = {
    "kern": 0,
    "user": 1,
    "mail": 2,
    "daemon": 3,
    "auth": 4,
    "syslog": 5,
    "lpr": 6,
    "news": 7,
    "uucp": 8,
    "cron": 9,
    "authpriv": 10,
    "ftp": 11,
    "ntp": 12,
    "security": 13,
    "console": 14,
    "solaris-cron": 15,
    **{f"local{n}": 16 + n for n in range(8)},
}

#: The enterprise number 32473 is the one RFC 5612 reserves for examples.
DEFAULT_SD_ID = "forklog@32473"
#: Structured-data names the sink writes itself; an extra of the same name becomes ``extra.<name>``.
_OWN_PARAMS = frozenset({"logger", "level"})  # "thread" is a LogRecord attribute
#: RFC 5424 PRINTUSASCII: '!' to '~'.
_PRINTABLE = frozenset(range(33, 127))
_SD_NAME_CHARS = _PRINTABLE - {ord("="), ord("]"), ord('"')}
_SD_NAME = re.compile(r"[!#-<>-\\^-~]{1,32}\Z")  # the same, for names that need no change
_SD_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"', "]": "\\]"})
_exception_formatter = logging.Formatter()


def severity(levelno: int) -> int:
    """The syslog severity of a logging level: crit, err, warning, notice (21-29), info, debug."""
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    if levelno > logging.INFO:
        return 5
    if levelno >= logging.INFO:
        return 6
    return 7


def facility_code(facility: Union[str, int]) -> int:
    """A facility name (``"local0"``) or number (0-23) as its number; ``ValueError`` otherwise."""
    if isinstance(facility, int) and not isinstance(facility, bool) and 0 <= facility <= 23:
        return facility
    if isinstance(facility, str) and facility.lower() in FACILITIES:
        return FACILITIES[facility.lower()]
    raise ValueError(
        f"forklog.SyslogSink: facility={facility!r}: expected a number 0-23 or one of {', '.join(FACILITIES)}"
    )


def header_field(text: str, limit: int) -> str:
    """``text`` as an RFC 5424 header field: printable US-ASCII, at most ``limit``, ``-`` if empty."""
    kept = "".join(ch if ord(ch) in _PRINTABLE else "_" for ch in text[:limit])
    return kept or "-"


def sd_name(text: str) -> str:
    """``text`` as an SD-NAME: 1-32 printable US-ASCII characters but ``= ] "`` (and space)."""
    if _SD_NAME.match(text):
        return text
    kept = "".join(ch if ord(ch) in _SD_NAME_CHARS else "_" for ch in text[:32])
    return kept or "_"


def sd_escape(text: str) -> str:
    r"""``text`` as a PARAM-VALUE: ``\``, ``"`` and ``]`` escaped with a backslash."""
    if "\\" in text or '"' in text or "]" in text:
        return text.translate(_SD_ESCAPES)
    return text


def sd_value(value: object) -> str:
    """An extra's value as text: a string as it is, anything else as JSON (or its repr)."""
    if type(value) is str:
        return value
    try:
        return json.dumps(value, default=safe_repr, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):
        return safe_repr(value)


class Rfc5424:
    """The message a record makes: mixed into a sink that sets the attributes below."""

    facility: int
    app_name: str
    hostname: str
    sd_id: str
    #: The longest message, in bytes: its text is cut with a visible marker.
    max_message_size: int
    formatter: Optional[logging.Formatter]
    _second: int
    _stamp: str
    _msgids: Dict[str, str]

    def encode(self, record: logging.LogRecord) -> bytes:
        """``record`` as one RFC 5424 message (without framing), at most ``max_message_size`` bytes."""
        head = self._head(record)
        text = self._text(record)
        data = text.encode("utf-8", "backslashreplace")
        room = self.max_message_size - len(head)
        if room < self.max_message_size // 2:
            # Extras of megabytes: keep the message, say what was left out.
            head = self._head(record, extras=False, note=f"extra fields dropped: {len(head)} bytes")
            room = self.max_message_size - len(head)
        if len(data) > room:
            text = cut_text(text, len(data) - room)
            data = text.encode("utf-8", "backslashreplace")
            if len(data) > room:  # lone surrogates take four bytes once escaped
                data = data[: max(0, room)]
        return head + data

    def _head(self, record: logging.LogRecord, *, extras: bool = True, note: str = "") -> bytes:
        created = record.created
        second = int(created)
        if second != self._second:
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        micros = min(999_999, int((created - second) * 1_000_000))
        name = record.name if type(record.name) is str else safe_repr(record.name)
        params = [
            f'logger="{sd_escape(name if extras else name[:256])}"',
            f'level="{sd_escape(str(record.levelname))}"',
            f'thread="{sd_escape(str(record.threadName)[:256])}"',
        ]
        # The extras and bound fields, found as the pipe's codec finds them
        # (anything that is not a LogRecord attribute), so all sinks agree.
        fields = extra_fields(record.__dict__) if extras else None
        if fields:
            for key, value in fields.items():
                param = sd_name(f"extra.{key}" if key in _OWN_PARAMS else key)
                params.append(f'{param}="{sd_escape(sd_value(value))}"')
        if note:
            params.append(f'forklog_truncated="{sd_escape(note)}"')
        pri = self.facility * 8 + severity(record.levelno)
        procid = str(record.process) if record.process is not None else "-"
        head = (
            f"<{pri}>1 {self._stamp}.{micros:06d}Z {self.hostname} {self.app_name} {procid} "
            f"{self._msgid(name)} [{self.sd_id} {' '.join(params)}] "
        )
        return head.encode("utf-8", "backslashreplace")

    def _msgid(self, name: str) -> str:
        """MSGID: the logger's name as an SD-NAME (a handful of loggers log almost everything)."""
        msgid = self._msgids.get(name)
        if msgid is None:
            if len(self._msgids) > 4096:
                self._msgids.clear()
            msgid = self._msgids[name] = sd_name(name) if name else "-"
        return msgid

    def _text(self, record: logging.LogRecord) -> str:
        """MSG: the sink's formatter's output if it has one, else the message, traceback and stack."""
        if self.formatter is not None:
            return self.formatter.format(record)
        parts = [merged_message(record)]
        exc_text = record.exc_text
        if not exc_text and record.exc_info:
            exc_text = _exception_formatter.formatException(record.exc_info)
        if exc_text:
            parts.append(str(exc_text))
        if record.stack_info:
            parts.append(str(record.stack_info))
        return "\n".join(parts)

    def _encode_safely(self, record: logging.LogRecord) -> bytes:
        try:
            return self.encode(record)
        except Exception as exc:  # noqa: BLE001 - a formatter that raised must not wedge the sink in retries
            fallback = logging.LogRecord(record.name, record.levelno, "", 0, "", None, None)
            fallback.process, fallback.created = record.process, record.created
            text = f"forklog: could not encode a record: {safe_repr(exc)}"
            return self._head(fallback, extras=False) + text.encode("utf-8", "backslashreplace")
