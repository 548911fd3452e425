"""forklog's settings: one frozen object, validated as a whole when it is built.

Four ways to build one, each checked the same way:

* Python: ``Settings(file="x.log", queue_size=500)``;
* a dict, ``logging.config.dictConfig`` style: :meth:`Settings.from_dict`;
* gunicorn's own settings (``loglevel``, ``errorlog``): :meth:`Settings.from_gunicorn`;
* the ``FORKLOG_*`` environment variables: :meth:`Settings.from_env`.

Every field is checked, then one :class:`SettingsError` lists every problem,
each as ``key=value: expected ...`` with the key in the source's own words
(the variable for ``from_env``, the dict key for ``from_dict``). The shipped
``gunicorn_conf.py`` builds its settings while gunicorn loads the config,
in the master, so a bad value stops gunicorn before any worker is forked.

Each field says how it is read, its variable and its meaning in its
metadata; :func:`markdown_table` makes the README's table from them alone.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import logging.handlers
import os
import sys
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple, TypeVar, Union

from forklog._master.log_directory import directory_mode, make_directories
from forklog._master.sinks import RotatingFileSink
from forklog._parsers import (
    _LEVELS_EXPECTED,
    _AppName,
    _Bool,
    _Choice,
    _Facility,
    _Group,
    _Int,
    _Kind,
    _Level,
    _LogFile,
    _Mode,
    _OptionalPath,
    _OTLPEndpoint,
    _Seconds,
    _SyslogURL,
    _Why,
)
from forklog.formatters import JSONFormatter, TextFormatter

#: The smallest max_record_bytes: one frame of the largest platform pipe size (Linux's 4096).
MIN_RECORD_BYTES = 4096

__all__ = [
    "CONSOLE_FORMAT",
    "FILE_FORMAT",
    "Problem",
    "Settings",
    "SettingsError",
    "markdown_table",
    "parse_level",
]

FILE_FORMAT = "%(asctime)s [%(levelname)s] %(name)s %(process)d %(threadName)s - %(message)s"
CONSOLE_FORMAT = "%(asctime)s %(levelname)-8s %(name)s | %(message)s"


def parse_level(key: str, value: Union[int, str]) -> int:
    """A level name (any case) or number, else a ``ValueError`` naming ``key``."""
    try:
        return _Level().parse(value)
    except ValueError:
        raise ValueError(f"{key}={value!r}: expected {_LEVELS_EXPECTED}") from None


@dataclasses.dataclass(frozen=True)
class Problem:
    """One bad setting: ``key=value: expected ...``."""

    key: str
    value: object
    expected: str

    def __str__(self) -> str:
        return f"{self.key}={self.value!r}: {self.expected}"


class SettingsError(ValueError):
    """Every problem found in one source of settings, one per line."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems: Tuple[Problem, ...] = tuple(problems)
        super().__init__("\n".join(str(problem) for problem in self.problems))

    def __reduce__(self) -> Tuple[Any, ...]:  # the default would rebuild it from the message
        return (type(self), (self.problems,))


_T = TypeVar("_T")


def _setting(default: _T, kind: _Kind, env: str, doc: str, *, hub: bool = False) -> _T:
    """A field of :class:`Settings`: its default, how it is read, its variable, its README line.

    ``hub=True``: it is also a keyword of :class:`forklog.Hub` (:meth:`Settings.hub_options`).
    """
    metadata = {"kind": kind, "env": env, "doc": doc, "hub": hub}
    return dataclasses.field(default=default, metadata=metadata)


# -- the settings -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Settings:
    """forklog's sinks and hub, as the shipped ``gunicorn_conf.py`` builds them.

    Level fields take a name (any case) or a number and hold the number;
    numeric fields also take their text ("500"), as a variable gives them.
    """

    file: str = _setting(
        "logs/app.log",
        _LogFile(),
        "FORKLOG_FILE",
        "the file sink (rotating), written by the master only",
    )
    level: int = _setting(logging.DEBUG, _Level(), "FORKLOG_LEVEL", "the file sink's level")
    console_level: int = _setting(
        logging.INFO, _Level(), "FORKLOG_CONSOLE_LEVEL", "the console's (stderr) level"
    )
    format: str = _setting(
        "text",
        _Choice("text", "json"),
        "FORKLOG_FORMAT",
        "the file sink's format; `json`: one object per line with `time`, `level`, `logger`, "
        "`message`, `pid`, `thread`, `exc_info` and the `extra` fields",
    )
    queue_size: int = _setting(
        10_000,
        _Int(1),
        "FORKLOG_QUEUE_SIZE",
        "records the master holds between the pipe and the sinks",
        hub=True,
    )
    max_bytes: int = _setting(
        10 * 1024 * 1024, _Int(1), "FORKLOG_MAX_BYTES", "the file sink rotates at this size"
    )
    backup_count: int = _setting(5, _Int(0), "FORKLOG_BACKUP_COUNT", "rotated files kept")
    rotate_when: str = _setting(
        "none",
        _Choice("none", "midnight", "h", "d", "m", "s"),
        "FORKLOG_ROTATE_WHEN",
        "also rotate by time: at midnight, or every hour/day/minute/second (`h`, `d`, `m`, `s`)",
    )
    compress: bool = _setting(
        False, _Bool(), "FORKLOG_COMPRESS", "gzip rotated files, in a thread of their own"
    )
    file_mode: int = _setting(
        0o640, _Mode(), "FORKLOG_FILE_MODE", "permission bits of the log files (the umask can remove more)"
    )
    console: str = _setting(
        "stderr", _Choice("stderr", "stdout", "off"), "FORKLOG_CONSOLE", "where the console sink writes"
    )
    console_format: str = _setting(
        "text",
        _Choice("text", "json"),
        "FORKLOG_CONSOLE_FORMAT",
        "the console's format; `json` for containers whose platform collects stdout",
    )
    adopted_files: str = _setting(
        "files",
        _Choice("files", "console"),
        "FORKLOG_ADOPTED_FILES",
        "where the app's own file handlers write: their `files`, or the `console` (containers): each "
        "line as the app formatted it, or with a JSON console its `message`",
    )
    keep_level: int = _setting(
        logging.ERROR,
        _Level(),
        "FORKLOG_KEEP_LEVEL",
        "records at this level and up wait for room in a full pipe; lower ones are dropped and counted",
        hub=True,
    )
    keep_wait: float = _setting(
        0.1, _Seconds(positive=False), "FORKLOG_KEEP_WAIT", "how long such a record waits at most", hub=True
    )
    max_record_bytes: int = _setting(
        1 << 20,
        _Int(MIN_RECORD_BYTES),
        "FORKLOG_MAX_RECORD_BYTES",
        "a bigger record has its message, then its traceback, cut to fit, with a visible marker",
        hub=True,
    )
    stop_timeout: float = _setting(
        10.0,
        _Seconds(positive=True),
        "FORKLOG_STOP_TIMEOUT",
        "at shutdown, how long the hub drains the pipe before it reports what is left",
        hub=True,
    )

    syslog: Optional[str] = _setting(
        None,
        _SyslogURL(),
        "FORKLOG_SYSLOG",
        "also send to syslog (RFC 5424; octet-counted over TCP, answered over RELP), e.g. `relp://127.0.0.1:2514`",
    )
    syslog_level: int = _setting(logging.INFO, _Level(), "FORKLOG_SYSLOG_LEVEL", "the syslog sink's level")
    syslog_facility: str = _setting(
        "user", _Facility(), "FORKLOG_SYSLOG_FACILITY", "the syslog messages' facility, e.g. `local0`"
    )
    syslog_app_name: Optional[str] = _setting(
        None,
        _AppName(),
        "FORKLOG_SYSLOG_APP_NAME",
        "the syslog messages' APP-NAME (unset: the program's name)",
    )
    otlp_endpoint: Optional[str] = _setting(
        None,
        _OTLPEndpoint(),
        "FORKLOG_OTLP_ENDPOINT",
        "also export over OTLP/HTTP, e.g. `http://127.0.0.1:4318/v1/logs`",
    )
    otlp_level: int = _setting(logging.INFO, _Level(), "FORKLOG_OTLP_LEVEL", "the OTLP sink's level")
    hub_group: Optional[int] = _setting(
        None,
        _Group(),
        "FORKLOG_HUB_GROUP",
        "forklog run: a group whose members may attach too (the hub opens no file they name)",
    )
    stats_interval: float = _setting(
        0.0,
        _Seconds(positive=False),
        "FORKLOG_STATS_INTERVAL",
        "every so many seconds, a `forklog: stats` record with the hub's counters (0: off)",
        hub=True,
    )
    prometheus_file: Optional[str] = _setting(
        None,
        _OptionalPath(),
        "FORKLOG_PROMETHEUS_FILE",
        "a Prometheus text file (node_exporter's textfile collector) the master keeps current",
        hub=True,
    )

    def __post_init__(self) -> None:
        problems: List[Problem] = []
        for field in dataclasses.fields(self):
            kind: _Kind = field.metadata["kind"]
            value = getattr(self, field.name)
            try:
                object.__setattr__(self, field.name, kind.parse(value))
            except (ValueError, TypeError) as exc:
                why = f" ({exc})" if isinstance(exc, _Why) else ""
                problems.append(Problem(field.name, value, kind.expected + why))
        if not problems and self.adopted_files == "console" and self.console == "off":
            problems.append(
                Problem(
                    "adopted_files",
                    self.adopted_files,
                    "expected a console to write to (FORKLOG_CONSOLE is off)",
                )
            )
        if problems:
            raise SettingsError(problems)

    # -- constructors -----------------------------------------------------------------------

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None) -> Settings:
        """Read the ``FORKLOG_*`` variables; unset or empty ones keep their defaults.

        An unknown ``FORKLOG_*`` variable (a typo) is an error too.
        """
        environ = os.environ if environ is None else environ
        names = {field.metadata["env"]: field.name for field in dataclasses.fields(cls)}
        values = {names[k]: v for k, v in environ.items() if k in names and v != ""}
        unknown = [
            k
            for k in sorted(environ)
            if k.startswith("FORKLOG_") and k not in names and k not in _NOT_SETTINGS
        ]
        return cls._build(
            values, {field: env for env, field in names.items()}, _unknown(unknown, environ, sorted(names))
        )

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> Settings:
        """Read a ``{"level": "INFO", ...}`` dict, or the ``"forklog"`` section of a dictConfig dict.

        ``logging.config.dictConfig`` ignores a top-level key it does not
        know, so one dict can configure both. A dictConfig dict (one with
        ``"version"``) without a ``"forklog"`` section gives the defaults.
        """
        prefix = ""
        if "forklog" in config:
            section = config["forklog"]
            if not isinstance(section, Mapping):
                raise SettingsError([Problem("forklog", section, "expected a mapping of settings")])
            config, prefix = section, "forklog."
        elif "version" in config:
            config = {}
        keys = [field.name for field in dataclasses.fields(cls)]
        unknown = [k for k in config if k not in keys]
        values = {k: v for k, v in config.items() if k in keys}
        problems = _unknown(unknown, config, keys, prefix)
        return cls._build(values, {k: prefix + k for k in keys}, problems)

    @classmethod
    def from_gunicorn(cls, cfg: Any, base: Optional[Settings] = None) -> Settings:
        """``base`` (the defaults if ``None``) with gunicorn's logging settings applied.

        * ``loglevel`` sets ``console_level``: what gunicorn would print on stderr.
        * ``errorlog``, when a path (not ``-``), becomes ``file``, at ``loglevel``:
          the file gunicorn would have written its error log to.

        Nothing else is taken from gunicorn. Problems are named after
        gunicorn's settings (``loglevel='loud': expected ...``).
        """
        base = cls() if base is None else base
        values = dataclasses.asdict(base)
        names = {field.name: field.name for field in dataclasses.fields(cls)}
        values["console_level"], names["console_level"] = cfg.loglevel, "loglevel"
        errorlog = cfg.errorlog
        if errorlog and errorlog != "-":
            values["file"], names["file"] = errorlog, "errorlog"
            values["level"], names["level"] = cfg.loglevel, "loglevel"
        return cls._build(values, names, [])

    @classmethod
    def _build(cls, values: Dict[str, Any], names: Mapping[str, str], problems: List[Problem]) -> Settings:
        """``cls(**values)``; every problem, renamed to the source's key, in one error."""
        problems = list(problems)
        settings: Optional[Settings] = None
        try:
            settings = cls(**values)
        except SettingsError as exc:
            for problem in exc.problems:
                renamed = Problem(names.get(problem.key, problem.key), problem.value, problem.expected)
                if renamed not in problems:  # gunicorn's loglevel feeds two fields
                    problems.append(renamed)
        if problems or settings is None:
            raise SettingsError(problems)
        return settings

    # -- what the settings make ----------------------------------------------------------------

    def hub_options(self) -> Dict[str, Any]:
        """The keyword arguments of :class:`forklog.Hub` (and ``forklog.gunicorn.configure``)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.metadata["hub"]}

    def handlers(self, *, create: bool = True) -> List[Tuple[str, logging.Handler]]:
        """The sinks: the rotating file and the console (each unless off), syslog and OTLP if set.

        ``create=False`` makes no directory and opens no file (the file sink
        opens on its first record): for inspecting them, as ``python -m
        forklog check`` does.
        """
        sinks: List[Tuple[str, logging.Handler]] = []
        if self.file != "-":
            if create:
                directory = os.path.dirname(os.path.abspath(self.file))
                make_directories(directory, directory_mode(self.file_mode))
            file_handler = RotatingFileSink(
                self.file,
                self.file_mode,
                maxBytes=self.max_bytes,
                backupCount=self.backup_count,
                encoding="utf-8",
                delay=not create,
                errors="backslashreplace",
                when=None if self.rotate_when == "none" else _WHEN[self.rotate_when],
                compress=self.compress,
            )
            file_handler.setLevel(self.level)
            file_handler.setFormatter(
                JSONFormatter() if self.format == "json" else TextFormatter(FILE_FORMAT)
            )
            sinks.append(("file", file_handler))
        if self.console != "off":
            console = logging.StreamHandler(sys.stdout if self.console == "stdout" else sys.stderr)
            console.setLevel(self.console_level)
            console.setFormatter(
                JSONFormatter()
                if self.console_format == "json"
                else TextFormatter(CONSOLE_FORMAT, escape_newlines=True)
            )
            sinks.append(("console", console))
        if self.syslog is not None:
            from forklog.syslog import SyslogSink  # noqa: PLC0415 - only when asked for

            sink = SyslogSink.from_url(
                self.syslog,
                level=self.syslog_level,
                facility=self.syslog_facility,
                app_name=self.syslog_app_name,
            )
            sinks.append(("syslog", sink))
        if self.otlp_endpoint is not None:
            from forklog.otlp import OTLPSink  # noqa: PLC0415 - the optional extra

            sinks.append(("otlp", OTLPSink(self.otlp_endpoint, level=self.otlp_level)))
        return sinks


#: ``FORKLOG_*`` variables that are no settings: the portable choices (for testing), and the hub's
#: address and user, which forklog run gives the processes below it.
_NOT_SETTINGS = frozenset({"FORKLOG_PORTABLE", "FORKLOG_HUB", "FORKLOG_HUB_UID"})

#: ``rotate_when`` as ``RotatingFileSink(when=...)`` spells it.
_WHEN = {"midnight": "midnight", "h": "H", "d": "D", "m": "M", "s": "S"}


def _unknown(
    keys: Iterable[str], source: Mapping[str, Any], known: List[str], prefix: str = ""
) -> List[Problem]:
    """``key=value: unknown setting ...`` for each key, with the closest known one."""
    problems = []
    for key in keys:
        close = difflib.get_close_matches(key, known, n=1)
        hint = f"; did you mean {prefix}{close[0]}?" if close else ";"
        expected = f"unknown setting{hint} expected one of: {', '.join(sorted(known))}"
        problems.append(Problem(prefix + key, source[key], expected))
    return problems


# -- the settings table (docs/configuration.md) ---------------------------------------------

TABLE_START, TABLE_END = "<!-- settings-table:start -->", "<!-- settings-table:end -->"


def markdown_table(cls: type = Settings) -> str:
    """The settings table of docs/configuration.md, made from the fields' metadata alone."""
    rows = ["| key | variable | default | accepts | meaning |", "|---|---|---|---|---|"]
    for field in dataclasses.fields(cls):
        kind: _Kind = field.metadata["kind"]
        accepts = kind.expected.replace("expected ", "", 1).replace("|", "\\|")
        rows.append(
            f"| `{field.name}` | `{field.metadata['env']}` | `{kind.show(field.default)}` "
            f"| {accepts} | {field.metadata['doc']} |"
        )
    return "\n".join(rows) + "\n"


def replace_table(text: str, table: str) -> str:
    """``text`` with what is between the table's markers replaced by ``table``."""
    start, end = text.index(TABLE_START) + len(TABLE_START), text.index(TABLE_END)
    return f"{text[:start]}\n{table}{text[end:]}"
