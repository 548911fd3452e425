"""Settings: built from FORKLOG_* variables, validated at once with a clear message."""

from __future__ import annotations

import logging
import logging.handlers
import os
from pathlib import Path

import pytest

from forklog import JSONFormatter, Settings


def test_defaults_match_the_documented_sinks(tmp_path: Path) -> None:
    """Rotating file at DEBUG (10 MiB x 5) and the console at INFO."""
    settings = Settings.from_env({"FORKLOG_FILE": str(tmp_path / "logs" / "app.log")})
    sinks = dict(settings.handlers())
    file_sink = sinks["file"]
    assert isinstance(file_sink, logging.handlers.RotatingFileHandler)
    assert file_sink.level == logging.DEBUG
    assert (file_sink.maxBytes, file_sink.backupCount) == (10 * 1024 * 1024, 5)
    assert sinks["console"].level == logging.INFO
    assert (tmp_path / "logs").is_dir()
    file_sink.close()


def test_env_overrides(tmp_path: Path) -> None:
    """Each variable lands in its field."""
    settings = Settings.from_env(
        {
            "FORKLOG_FILE": str(tmp_path / "x.log"),
            "FORKLOG_LEVEL": "info",
            "FORKLOG_CONSOLE_LEVEL": "30",
            "FORKLOG_FORMAT": "JSON",
            "FORKLOG_QUEUE_SIZE": "500",
        }
    )
    assert (settings.level, settings.console_level, settings.format, settings.queue_size) == (
        logging.INFO,
        logging.WARNING,
        "json",
        500,
    )
    sinks = dict(settings.handlers())
    assert isinstance(sinks["file"].formatter, JSONFormatter)
    sinks["file"].close()


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("FORKLOG_LEVEL", "LOUD", "FORKLOG_LEVEL='LOUD': expected a level name"),
        ("FORKLOG_CONSOLE_LEVEL", "-3", "FORKLOG_CONSOLE_LEVEL='-3': expected a level name"),
        ("FORKLOG_FORMAT", "xml", "FORKLOG_FORMAT='xml': expected 'text' or 'json'"),
        ("FORKLOG_QUEUE_SIZE", "many", "FORKLOG_QUEUE_SIZE='many': expected an integer"),
        ("FORKLOG_QUEUE_SIZE", "-1", "FORKLOG_QUEUE_SIZE=-1: expected a positive integer"),
    ],
)
def test_bad_values_name_the_variable(variable: str, value: str, message: str) -> None:
    """A bad value fails at once with the variable, the value and what was expected."""
    with pytest.raises(ValueError) as info:
        Settings.from_env({variable: value})
    assert str(info.value).startswith(message)


def test_no_file_sink() -> None:
    """FORKLOG_FILE=- keeps only the console."""
    assert [name for name, _h in Settings.from_env({"FORKLOG_FILE": "-"}).handlers()] == ["console"]
    assert os.environ is not None
