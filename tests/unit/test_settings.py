"""Settings: one frozen object from Python, a dict, gunicorn or FORKLOG_*, every problem reported at once."""

from __future__ import annotations

import dataclasses
import inspect
import logging
import logging.config
import logging.handlers
import pickle
import sys
from pathlib import Path
from typing import Any, Dict

import pytest

import forklog
from forklog import Hub, JSONFormatter, RotatingFileSink, Settings, SettingsError
from forklog.__main__ import main
from forklog._parsers import _Int
from forklog.settings import TABLE_END, TABLE_START, _setting, markdown_table, replace_table

PAGE = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


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
    """Each variable lands in its field, the hub's options included."""
    settings = Settings.from_env(
        {
            "FORKLOG_FILE": str(tmp_path / "x.log"),
            "FORKLOG_LEVEL": "info",
            "FORKLOG_CONSOLE_LEVEL": "30",
            "FORKLOG_FORMAT": "JSON",
            "FORKLOG_QUEUE_SIZE": "500",
            "FORKLOG_KEEP_LEVEL": "warning",
            "FORKLOG_KEEP_WAIT": "0.5",
            "FORKLOG_MAX_RECORD_BYTES": "65536",
            "FORKLOG_STOP_TIMEOUT": "3",
            "FORKLOG_BACKUP_COUNT": "",  # empty: the default
        }
    )
    assert (settings.level, settings.console_level, settings.format, settings.queue_size) == (
        logging.INFO,
        logging.WARNING,
        "json",
        500,
    )
    assert settings.backup_count == 5
    assert settings.hub_options() == {
        "queue_size": 500,
        "keep_level": logging.WARNING,
        "keep_wait": 0.5,
        "max_record_bytes": 65536,
        "stop_timeout": 3.0,
        "stats_interval": 0.0,
        "prometheus_file": None,
    }
    sinks = dict(settings.handlers())
    assert isinstance(sinks["file"].formatter, JSONFormatter)
    sinks["file"].close()


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("FORKLOG_LEVEL", "LOUD", "FORKLOG_LEVEL='LOUD': expected a level name"),
        ("FORKLOG_CONSOLE_LEVEL", "-3", "FORKLOG_CONSOLE_LEVEL='-3': expected a level name"),
        ("FORKLOG_FORMAT", "xml", "FORKLOG_FORMAT='xml': expected 'text' or 'json'"),
        ("FORKLOG_QUEUE_SIZE", "many", "FORKLOG_QUEUE_SIZE='many': expected an integer >= 1"),
        ("FORKLOG_QUEUE_SIZE", "-1", "FORKLOG_QUEUE_SIZE='-1': expected an integer >= 1"),
        ("FORKLOG_MAX_BYTES", "-5", "FORKLOG_MAX_BYTES='-5': expected an integer >= 1"),
        ("FORKLOG_BACKUP_COUNT", "-1", "FORKLOG_BACKUP_COUNT='-1': expected an integer >= 0"),
        ("FORKLOG_KEEP_WAIT", "-0.1", "FORKLOG_KEEP_WAIT='-0.1': expected seconds >= 0"),
        ("FORKLOG_KEEP_WAIT", "nan", "FORKLOG_KEEP_WAIT='nan': expected seconds >= 0"),
        ("FORKLOG_STOP_TIMEOUT", "0", "FORKLOG_STOP_TIMEOUT='0': expected seconds > 0"),
        ("FORKLOG_MAX_RECORD_BYTES", "100", "FORKLOG_MAX_RECORD_BYTES='100': expected an integer >= 4096"),
        ("FORKLOG_KEEP_LEVEL", "LOUD", "FORKLOG_KEEP_LEVEL='LOUD': expected a level name"),
    ],
)
def test_bad_values_name_the_variable(variable: str, value: str, message: str) -> None:
    """A bad value fails at once with the variable, the value and what was expected."""
    with pytest.raises(SettingsError) as info:
        Settings.from_env({variable: value})
    assert str(info.value).startswith(message)
    assert isinstance(info.value, ValueError)


def test_every_problem_is_reported_at_once() -> None:
    """Three bad variables and a typo give one error with four lines, in the variables' words."""
    with pytest.raises(SettingsError) as info:
        Settings.from_env(
            {
                "FORKLOG_LEVEL": "LOUD",
                "FORKLOG_QUEUE_SIZE": "-1",
                "FORKLOG_FILE": "/etc/hostname/app.log",
                "FORKLOG_LEVLE": "INFO",
                "HOME": "/root",
            }
        )
    assert [p.key for p in info.value.problems] == [
        "FORKLOG_LEVLE",
        "FORKLOG_FILE",
        "FORKLOG_LEVEL",
        "FORKLOG_QUEUE_SIZE",
    ]
    lines = str(info.value).splitlines()
    assert len(lines) == 4
    assert lines[0].startswith(
        "FORKLOG_LEVLE='INFO': unknown setting; did you mean FORKLOG_LEVEL? expected one of: "
    )
    assert "FORKLOG_STOP_TIMEOUT" in lines[0]
    assert lines[1] == (
        "FORKLOG_FILE='/etc/hostname/app.log': expected a writable file path, or '-' for no file sink "
        "(/etc/hostname is not a directory)"
    )


@pytest.mark.parametrize("path", ["/etc/hostname/app.log", "/proc/sys/forklog/app.log", "/etc"])
def test_an_unwritable_path_fails(path: str) -> None:
    """A file under a regular file, on a read-only tree, or a directory fails, even for root."""
    with pytest.raises(SettingsError) as info:
        Settings(file=path)
    assert str(info.value).startswith(f"file={path!r}: expected a writable file path")


def test_validation_creates_nothing(tmp_path: Path) -> None:
    """A path whose directories do not exist yet is valid, and checking it makes none of them."""
    target = tmp_path / "a" / "b" / "app.log"
    settings = Settings(file=str(target))
    assert not (tmp_path / "a").exists()
    sinks = settings.handlers(create=False)
    assert not (tmp_path / "a").exists(), "handlers(create=False) touched the disk"
    for _name, handler in sinks:
        handler.close()
    assert Settings(file="-").handlers(create=False)[0][0] == "console"


def test_python_construction_checks_every_field() -> None:
    """Settings(...) from Python checks and normalises like the other sources, field names as keys."""
    settings = Settings(level="warning", keep_level="CRITICAL", queue_size="7", format=" JSON ")  # type: ignore[arg-type]
    assert (settings.level, settings.keep_level, settings.queue_size, settings.format) == (30, 50, 7, "json")
    with pytest.raises(SettingsError) as info:
        Settings(queue_size=-1, max_bytes=0, keep_wait=True)
    assert str(info.value).splitlines() == [
        "queue_size=-1: expected an integer >= 1",
        "max_bytes=0: expected an integer >= 1",
        "keep_wait=True: expected seconds >= 0",
    ]
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.level = 10  # type: ignore[misc]


def test_from_dict_plain_and_dictconfig_section(tmp_path: Path) -> None:
    """Plain keys, or the "forklog" section of a dictConfig dict that dictConfig itself accepts."""
    plain = Settings.from_dict({"file": "-", "level": "INFO", "queue_size": 100})
    assert (plain.file, plain.level, plain.queue_size) == ("-", logging.INFO, 100)
    config: Dict[str, Any] = {
        "version": 1,
        "disable_existing_loggers": False,
        "forklog": {"file": str(tmp_path / "x.log"), "keep_level": "WARNING"},
    }
    logging.config.dictConfig(config)  # the extra section does not bother dictConfig
    section = Settings.from_dict(config)
    assert (section.file, section.keep_level) == (str(tmp_path / "x.log"), logging.WARNING)
    assert Settings.from_dict({"version": 1}) == Settings()


def test_from_dict_unknown_keys_suggest_the_closest() -> None:
    """Unknown keys fail with the closest known one and the list; section keys carry their prefix."""
    with pytest.raises(SettingsError) as info:
        Settings.from_dict({"levle": "INFO", "colour": "red", "max_bytes": -1})
    lines = str(info.value).splitlines()
    assert lines[0].startswith(
        "levle='INFO': unknown setting; did you mean level? expected one of: adopted_files, backup_count,"
    )
    assert lines[1].startswith("colour='red': unknown setting; expected one of: ")
    assert lines[2] == "max_bytes=-1: expected an integer >= 1"
    with pytest.raises(SettingsError) as info:
        Settings.from_dict({"version": 1, "forklog": {"queue_sise": 5}})
    assert str(info.value).startswith(
        "forklog.queue_sise=5: unknown setting; did you mean forklog.queue_size?"
    )
    with pytest.raises(SettingsError, match=r"^forklog=\['level'\]: expected a mapping of settings$"):
        Settings.from_dict({"forklog": ["level"]})


def test_from_gunicorn_maps_loglevel_and_errorlog(tmp_path: Path) -> None:
    """loglevel sets the console's level; an errorlog path becomes the file sink at loglevel."""
    from gunicorn.config import Config

    cfg = Config()
    default = Settings.from_gunicorn(cfg)
    assert (default.console_level, default.file, default.level) == (
        logging.INFO,
        "logs/app.log",
        logging.DEBUG,
    )
    cfg.set("loglevel", "warning")
    cfg.set("errorlog", str(tmp_path / "error.log"))
    base = Settings(queue_size=42)
    mapped = Settings.from_gunicorn(cfg, base)
    assert (mapped.console_level, mapped.file, mapped.level) == (
        logging.WARNING,
        str(tmp_path / "error.log"),
        logging.WARNING,
    )
    assert mapped.queue_size == 42
    cfg.set("loglevel", "loud")
    cfg.set("errorlog", "/etc/hostname/error.log")
    with pytest.raises(SettingsError) as info:
        Settings.from_gunicorn(cfg)
    assert [p.key for p in info.value.problems] == ["errorlog", "loglevel"]  # loglevel once, not twice
    assert str(info.value).splitlines()[1].startswith("loglevel='loud': expected a level name")


def test_hub_options_are_the_hubs_keywords() -> None:
    """hub_options() names only keywords of forklog.Hub, and a Hub accepts them."""
    options = Settings().hub_options()
    assert set(options) <= set(inspect.signature(Hub).parameters)
    hub = Hub([], **options)  # built, not started: no thread
    try:
        assert (hub.queue_size, hub.stop_timeout, hub.queue.keep_level) == (10_000, 10.0, logging.ERROR)
    finally:
        hub.queue.close()


def test_error_pickles_with_its_problems() -> None:
    """A SettingsError crosses a process boundary with its problems intact."""
    with pytest.raises(SettingsError) as info:
        Settings(queue_size=0)
    again = pickle.loads(pickle.dumps(info.value))
    assert again.problems == info.value.problems and str(again) == str(info.value)


def test_variables_follow_the_field_names() -> None:
    """Each field's variable is FORKLOG_ and its name in capitals, and has a doc for the README."""
    for field in dataclasses.fields(Settings):
        assert field.metadata["env"] == f"FORKLOG_{field.name.upper()}"
        assert field.metadata["doc"]
    assert "SettingsError" in forklog.__all__


def test_the_table_is_made_from_field_metadata_alone() -> None:
    """A field added with _setting() appears in the table with its default, accepted values and doc."""

    @dataclasses.dataclass(frozen=True)
    class More(Settings):
        extra_count: int = _setting(3, _Int(2), "FORKLOG_EXTRA_COUNT", "a field added later")

    rows = markdown_table(More).splitlines()
    assert (
        rows[-1] == "| `extra_count` | `FORKLOG_EXTRA_COUNT` | `3` | an integer >= 2 | a field added later |"
    )
    assert len(rows) == 2 + len(dataclasses.fields(More))


def test_the_docs_table_is_current() -> None:
    """The Configuration page's settings table is the one the dataclass makes now."""
    text = PAGE.read_text(encoding="utf-8")
    committed = text[text.index(TABLE_START) + len(TABLE_START) : text.index(TABLE_END)]
    assert committed.strip() == markdown_table().strip(), (
        "docs/configuration.md's settings table is stale: run "
        "`python -m forklog settings --update docs/configuration.md`"
    )


def test_settings_command_prints_and_updates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`python -m forklog settings` prints the table; --update rewrites only what is between the markers."""
    assert main(["settings"]) == 0
    assert capsys.readouterr().out == markdown_table()
    doc = tmp_path / "doc.md"
    doc.write_text(f"before\n{TABLE_START}\nold\n{TABLE_END}\nafter\n")
    assert main(["settings", "--update", str(doc)]) == 0
    assert doc.read_text() == f"before\n{TABLE_START}\n{markdown_table()}{TABLE_END}\nafter\n"
    assert replace_table(doc.read_text(), markdown_table()) == doc.read_text()


def test_file_and_console_options_reach_the_sinks(tmp_path: Path) -> None:
    """Time rotation, gzip, file mode and a JSON console on stdout come from FORKLOG_* variables."""
    settings = Settings.from_env(
        {
            "FORKLOG_FILE": str(tmp_path / "app.log"),
            "FORKLOG_ROTATE_WHEN": "midnight",
            "FORKLOG_COMPRESS": "yes",
            "FORKLOG_FILE_MODE": "0600",
            "FORKLOG_CONSOLE": "stdout",
            "FORKLOG_CONSOLE_FORMAT": "json",
        }
    )
    assert (settings.rotate_when, settings.compress, settings.file_mode) == ("midnight", True, 0o600)
    sinks = dict(settings.handlers())
    file_sink = sinks["file"]
    assert isinstance(file_sink, RotatingFileSink)
    assert file_sink.when == "MIDNIGHT" and file_sink.compress is True
    file_sink.emit(logging.LogRecord("x", logging.INFO, __file__, 1, "m", (), None))
    file_sink.close()
    assert (tmp_path / "app.log").stat().st_mode & 0o777 == 0o600
    console = sinks["console"]
    assert isinstance(console, logging.StreamHandler) and console.stream is sys.stdout
    assert isinstance(console.formatter, JSONFormatter)
    assert "console" not in dict(Settings(console="off", file="-").handlers())


def test_bad_file_and_console_options_are_named() -> None:
    """Bad values of the new options fail together, each named with what was expected."""
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(
            {"FORKLOG_ROTATE_WHEN": "weekly", "FORKLOG_COMPRESS": "maybe", "FORKLOG_FILE_MODE": "999"}
        )
    text = str(caught.value)
    assert "FORKLOG_ROTATE_WHEN='weekly': expected 'none' or 'midnight'" in text
    assert "FORKLOG_COMPRESS='maybe': expected true or false" in text
    assert "FORKLOG_FILE_MODE='999': expected permission bits in octal" in text


def test_syslog_and_otlp_sinks_from_variables() -> None:
    """FORKLOG_SYSLOG and FORKLOG_OTLP_ENDPOINT add those sinks, at their own levels."""
    from forklog import SyslogSink
    from forklog.otlp import OTLPSink

    settings = Settings.from_env(
        {
            "FORKLOG_FILE": "-",
            "FORKLOG_SYSLOG": "tcp://127.0.0.1:5514",
            "FORKLOG_SYSLOG_LEVEL": "warning",
            "FORKLOG_OTLP_ENDPOINT": "http://127.0.0.1:4318/v1/logs",
        }
    )
    sinks = dict(settings.handlers())
    syslog, otlp = sinks["syslog"], sinks["otlp"]
    assert isinstance(syslog, SyslogSink) and syslog.level == logging.WARNING
    assert isinstance(otlp, OTLPSink) and otlp.level == logging.INFO
    syslog.close()
    otlp.close()
    assert "syslog" not in dict(Settings(file="-").handlers())


def test_the_syslog_sinks_facility_and_app_name_from_variables() -> None:
    """Issue 23, item 5: FORKLOG_SYSLOG_FACILITY and FORKLOG_SYSLOG_APP_NAME set what SyslogSink takes."""
    from forklog import SyslogSink

    base = {"FORKLOG_FILE": "-", "FORKLOG_SYSLOG": "tcp://127.0.0.1:5514"}
    sink = dict(
        Settings.from_env(
            {**base, "FORKLOG_SYSLOG_FACILITY": "local3", "FORKLOG_SYSLOG_APP_NAME": "shop"}
        ).handlers()
    )["syslog"]
    assert isinstance(sink, SyslogSink) and (sink.facility, sink.app_name) == (19, "shop")
    sink.close()
    plain = dict(Settings.from_env(base).handlers())["syslog"]
    reference = SyslogSink(("127.0.0.1", 5514))  # the code's defaults: user, the program's name
    assert isinstance(plain, SyslogSink) and (plain.facility, plain.app_name) == (
        reference.facility,
        reference.app_name,
    )
    plain.close()
    reference.close()
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(
            {**base, "FORKLOG_SYSLOG_FACILITY": "kitchen", "FORKLOG_SYSLOG_APP_NAME": "my shop"}
        )
    assert "FORKLOG_SYSLOG_FACILITY='kitchen': expected a syslog facility name" in str(caught.value)
    assert "FORKLOG_SYSLOG_APP_NAME='my shop': expected 1 to 48 printable ASCII" in str(caught.value)


def test_bad_syslog_and_otlp_addresses_are_named() -> None:
    """A syslog URL or an OTLP endpoint of the wrong kind fails with what was expected."""
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"FORKLOG_SYSLOG": "http://logs:514", "FORKLOG_OTLP_ENDPOINT": "ftp://collector"})
    text = str(caught.value)
    assert "FORKLOG_SYSLOG='http://logs:514': expected tcp://host:port" in text
    assert "FORKLOG_OTLP_ENDPOINT='ftp://collector': expected an http:// or https:// URL" in text


def test_the_hubs_address_is_not_a_setting() -> None:
    """FORKLOG_HUB (forklog run's, for the processes below it) is no unknown setting: a config that reads
    the variables below forklog run still loads."""
    assert Settings.from_env({"FORKLOG_HUB": "/tmp/forklog-hub-x/hub.sock"}) == Settings()
