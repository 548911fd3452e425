"""How each kind of setting is read, checked and shown (the machinery of :mod:`forklog.settings`).

A kind turns a value given in Python, or as text from a variable, into the
field's value, or raises ``ValueError``; :class:`_Why` adds the reason to
what was expected. Checks touch nothing on disk and connect to nothing.
"""

from __future__ import annotations

import grp
import importlib.util
import logging
import math
import os
import urllib.parse
from typing import Any, Optional

_LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG", "NOTSET")
_LEVELS_EXPECTED = f"a level name ({', '.join(_LEVELS)}) or a number >= 0"


class _Why(ValueError):
    """A bad value, with the reason added to what was expected: ``(... is not a directory)``."""


class _Kind:
    """Turns a value from Python or from text into the field's value, or raises ``ValueError``."""

    expected = ""

    def parse(self, value: Any) -> Any:
        raise NotImplementedError

    def show(self, value: Any) -> str:
        return str(value)


class _Level(_Kind):
    expected = f"expected {_LEVELS_EXPECTED}"

    def parse(self, value: Any) -> int:
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
        if isinstance(value, str):
            text = value.strip()
            if text.upper() in _LEVELS:
                return int(logging.getLevelName(text.upper()))
            if text.isdigit():
                return int(text)
        raise ValueError

    def show(self, value: Any) -> str:
        return str(logging.getLevelName(value))


class _Int(_Kind):
    def __init__(self, minimum: int) -> None:
        self.minimum = minimum
        self.expected = f"expected an integer >= {minimum}"

    def parse(self, value: Any) -> int:
        if isinstance(value, str):
            value = int(value.strip())  # ValueError for "many"
        if not isinstance(value, int) or isinstance(value, bool) or value < self.minimum:
            raise ValueError
        return value


class _Seconds(_Kind):
    def __init__(self, positive: bool) -> None:
        self.positive = positive
        self.expected = "expected seconds > 0" if positive else "expected seconds >= 0"

    def parse(self, value: Any) -> float:
        if isinstance(value, str):
            value = float(value.strip())
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise ValueError
        if value < 0 or (self.positive and value == 0):
            raise ValueError
        return float(value)


class _Choice(_Kind):
    def __init__(self, *choices: str) -> None:
        self.choices = choices
        self.expected = "expected " + " or ".join(repr(choice) for choice in choices)

    def parse(self, value: Any) -> str:
        if isinstance(value, str) and value.strip().lower() in self.choices:
            return value.strip().lower()
        raise ValueError


class _LogFile(_Kind):
    """A path the master can create and write, or ``-``. Checked without creating anything."""

    expected = "expected a writable file path, or '-' for no file sink"

    def parse(self, value: Any) -> str:
        if not isinstance(value, (str, os.PathLike)):
            raise ValueError
        path = os.fspath(value)
        if not isinstance(path, str) or not path:
            raise ValueError
        if path != "-":
            problem = _unwritable(path)
            if problem:
                raise _Why(problem)
        return path


class _Bool(_Kind):
    expected = "expected true or false (also 1/0, yes/no, on/off)"

    def parse(self, value: Any) -> bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower() if isinstance(value, (str, int)) else ""
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ValueError

    def show(self, value: Any) -> str:
        return "true" if value else "false"


class _Mode(_Kind):
    """File permission bits, as a number or as octal text (``"0640"``)."""

    expected = "expected permission bits in octal, like 0640"

    def parse(self, value: Any) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            mode = value
        elif isinstance(value, str) and value.strip().lstrip("0o").isdigit():
            mode = int(value.strip().replace("0o", ""), 8)
        else:
            raise ValueError
        if not 0 <= mode <= 0o777:
            raise ValueError
        return mode

    def show(self, value: Any) -> str:
        return f"0{value:o}"


class _SyslogURL(_Kind):
    expected = "expected tcp://host:port, relp://host:port, udp://host:port or unix:///path, or nothing"

    def parse(self, value: Any) -> Optional[str]:
        if value is None or value in ("", "-"):
            return None
        if not isinstance(value, str):
            raise ValueError
        from forklog.syslog import SyslogSink  # noqa: PLC0415 - only when asked for

        SyslogSink.from_url(value).close()  # parses it; connects to nothing
        return value

    def show(self, value: Any) -> str:
        return "-" if value is None else str(value)


class _Facility(_Kind):
    expected = "expected a syslog facility name (user, daemon, local0 ... local7, ...) or a number 0-23"

    def parse(self, value: Any) -> str:
        from forklog._master.rfc5424 import FACILITIES, facility_code  # noqa: PLC0415

        text = str(value).strip().lower()
        code = facility_code(int(text) if text.isdigit() else text)  # ValueError if it is none
        return next((name for name, number in FACILITIES.items() if number == code), str(code))


class _AppName(_Kind):
    expected = "expected 1 to 48 printable ASCII characters without spaces, or nothing (the program's name)"

    def parse(self, value: Any) -> Optional[str]:
        if value is None or value == "":
            return None
        if isinstance(value, str) and len(value) <= 48 and all(33 <= ord(ch) <= 126 for ch in value):
            return value
        raise ValueError

    def show(self, value: Any) -> str:
        return "-" if value is None else str(value)


class _Group(_Kind):
    expected = "expected a group's name or number on this machine, or nothing"

    def parse(self, value: Any) -> Optional[int]:
        if value is None or value == "":
            return None
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
        text = str(value).strip()
        try:
            return int(text) if text.isdigit() else grp.getgrnam(text).gr_gid
        except KeyError:
            raise ValueError from None

    def show(self, value: Any) -> str:
        return "-" if value is None else str(value)


class _OTLPEndpoint(_Kind):
    expected = "expected an http:// or https:// URL (needs pip install 'forklog[otlp]'), or nothing"

    def parse(self, value: Any) -> Optional[str]:
        if value is None or value in ("", "-"):
            return None
        if not isinstance(value, str):
            raise ValueError
        parts = urllib.parse.urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError
        if importlib.util.find_spec("opentelemetry.proto") is None:
            raise _Why("opentelemetry-proto is not installed: pip install 'forklog[otlp]'")
        return value

    def show(self, value: Any) -> str:
        return "-" if value is None else str(value)


class _OptionalPath(_Kind):
    """A file the master writes, or nothing (``None``, or ``""`` / ``-`` as text)."""

    expected = "expected a writable file path, or nothing"

    def parse(self, value: Any) -> Optional[str]:
        if value is None or value in ("", "-"):
            return None
        if not isinstance(value, (str, os.PathLike)):
            raise ValueError
        path = os.fspath(value)
        if not isinstance(path, str):
            raise ValueError
        problem = _unwritable(path)
        if problem:
            raise _Why(problem)
        return path

    def show(self, value: Any) -> str:
        return "-" if value is None else str(value)


def _unwritable(path: str) -> str:
    """Why ``path`` cannot be created or written ("" if it can), without touching the disk."""
    target = os.path.abspath(path)
    if os.path.isdir(target):
        return f"{target} is a directory"
    if os.path.exists(target):
        return "" if os.access(target, os.W_OK) else f"{target} is not writable"
    # The file's directory is made when the sink is built: its nearest
    # existing ancestor must be a directory this process can write.
    ancestor = os.path.dirname(target)
    while not os.path.lexists(ancestor):
        ancestor = os.path.dirname(ancestor)
    if not os.path.isdir(ancestor):
        return f"{ancestor} is not a directory"
    if not os.access(ancestor, os.W_OK | os.X_OK):
        return f"{ancestor} is not writable"
    return ""
