"""forklog's settings: one frozen object, validated when it is built.

Built from Python (``Settings(file=..., level="INFO")``) or from the
``FORKLOG_*`` environment variables (:meth:`Settings.from_env`). A bad value
fails at once, naming the setting, the value and what was expected, before
the hub starts and before any worker is forked.
"""

from __future__ import annotations

import dataclasses
import logging
import logging.handlers
import os
import sys
from typing import Any, ClassVar, Dict, List, Mapping, Optional, Tuple, Union

from forklog.formatters import JSONFormatter, TextFormatter
from forklog.master.sinks import RotatingFileSink

__all__ = ["FILE_FORMAT", "CONSOLE_FORMAT", "Settings", "parse_level"]

FILE_FORMAT = "%(asctime)s [%(levelname)s] %(name)s %(process)d %(threadName)s - %(message)s"
CONSOLE_FORMAT = "%(asctime)s %(levelname)-8s %(name)s | %(message)s"

_LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG", "NOTSET")


def parse_level(key: str, value: Union[int, str]) -> int:
    """A level name (any case) or number, else a ``ValueError`` naming ``key``."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str):
        text = value.strip()
        if text.upper() in _LEVELS:
            return int(logging.getLevelName(text.upper()))
        if text.isdigit():
            return int(text)
    raise ValueError(f"{key}={value!r}: expected a level name ({', '.join(_LEVELS)}) or a number >= 0")


@dataclasses.dataclass(frozen=True)
class Settings:
    """What the shipped ``gunicorn_conf.py`` builds its sinks and hub from."""

    #: The file sink's path (``FORKLOG_FILE``); ``"-"`` turns the file sink off.
    file: str = "logs/app.log"
    #: The file sink's level (``FORKLOG_LEVEL``).
    level: int = logging.DEBUG
    #: The console (stderr) sink's level (``FORKLOG_CONSOLE_LEVEL``).
    console_level: int = logging.INFO
    #: ``text`` or ``json`` for the file sink (``FORKLOG_FORMAT``).
    format: str = "text"
    #: Records the hub holds between the pipe and the sinks (``FORKLOG_QUEUE_SIZE``).
    queue_size: int = 10_000
    #: The file rotates at this size (``FORKLOG_MAX_BYTES``).
    max_bytes: int = 10 * 1024 * 1024
    #: Rotated files kept (``FORKLOG_BACKUP_COUNT``).
    backup_count: int = 5

    ENV: ClassVar[Dict[str, str]] = {
        "file": "FORKLOG_FILE",
        "level": "FORKLOG_LEVEL",
        "console_level": "FORKLOG_CONSOLE_LEVEL",
        "format": "FORKLOG_FORMAT",
        "queue_size": "FORKLOG_QUEUE_SIZE",
        "max_bytes": "FORKLOG_MAX_BYTES",
        "backup_count": "FORKLOG_BACKUP_COUNT",
    }

    def __post_init__(self) -> None:
        object.__setattr__(self, "level", parse_level("level", self.level))
        object.__setattr__(self, "console_level", parse_level("console_level", self.console_level))
        if self.format not in ("text", "json"):
            raise ValueError(f"format={self.format!r}: expected 'text' or 'json'")
        for key in ("queue_size", "max_bytes"):
            value = getattr(self, key)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{key}={value!r}: expected a positive integer")
        if not isinstance(self.backup_count, int) or self.backup_count < 0:
            raise ValueError(f"backup_count={self.backup_count!r}: expected an integer >= 0")
        if not self.file:
            raise ValueError("file='': expected a path, or '-' for no file sink")

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None) -> Settings:
        """Read the ``FORKLOG_*`` variables; unset ones keep their defaults."""
        environ = os.environ if environ is None else environ
        values: Dict[str, Any] = {}
        for field, variable in cls.ENV.items():
            raw = environ.get(variable)
            if raw is None or raw == "":
                continue
            if field in ("queue_size", "max_bytes", "backup_count"):
                try:
                    values[field] = int(raw)
                except ValueError:
                    raise ValueError(f"{variable}={raw!r}: expected an integer") from None
            elif field == "format":
                values[field] = raw.strip().lower()
            else:
                values[field] = raw
        try:
            return cls(**values)
        except ValueError as exc:
            field = str(exc).split("=", 1)[0]
            raise ValueError(f"{cls.ENV.get(field, field)}{str(exc)[len(field) :]}") from None

    def handlers(self) -> List[Tuple[str, logging.Handler]]:
        """The sinks: the rotating file (if any) and the console on stderr."""
        sinks: List[Tuple[str, logging.Handler]] = []
        if self.file != "-":
            directory = os.path.dirname(os.path.abspath(self.file))
            os.makedirs(directory, exist_ok=True)
            file_handler = RotatingFileSink(
                self.file,
                maxBytes=self.max_bytes,
                backupCount=self.backup_count,
                encoding="utf-8",
                errors="backslashreplace",
            )
            file_handler.setLevel(self.level)
            file_handler.setFormatter(
                JSONFormatter() if self.format == "json" else TextFormatter(FILE_FORMAT)
            )
            sinks.append(("file", file_handler))
        console = logging.StreamHandler(sys.stderr)
        console.setLevel(self.console_level)
        console.setFormatter(TextFormatter(CONSOLE_FORMAT, escape_newlines=True))
        sinks.append(("console", console))
        return sinks
