"""``python -m forklog check -c gunicorn_conf.py [flags] [module:app]``: what gunicorn will do with logs.

It takes gunicorn's own arguments (or the short form ``CONFIG [APP] [flags]``);
the config is loaded the way gunicorn loads it (forklog._check_config: the
file, then ``GUNICORN_CMD_ARGS``, then the flags), and the report says:

* which of forklog's hooks (and ``logger_class``) the config installs;
* gunicorn's logging settings and the hub's options;
* every sink of the hub: name, class, level, target, formatter;
* what adoption (:mod:`forklog._worker.adoption`) does with each handler the
  config, and with an app (``module:app``, as gunicorn takes it) importing
  the app, attaches to a logger: a local file or a standard stream is
  *adopted* (the master writes it, one sink per file); any other handler
  (mail, Sentry, a socket) *stays* in each process, as the app put it; a
  handler that writes a file or stream by means of its own (an ``emit`` of
  its own, a stream that is not stdout or stderr) *bypasses* the hub.

Exit status 1, each problem with its fix on the next line, when: a
handler bypasses the hub; the config installs none of forklog's hooks; it
does not load; a ``FORKLOG_*`` variable is bad; the app's file handlers
stay in several workers of another user (``--user`` without
``--preload``), each of which would write and rotate the file. 0 otherwise.

Nothing is started: no hub, no thread, no fork. Sinks are built without
opening their files, except those a config's own ``handlers`` function
opens when it is called (it is called once, then its handlers are closed).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import logging.handlers
import os
import pwd
import sys
from typing import Any, Callable, List, Optional, Sequence, Set, TextIO, Tuple

from gunicorn import util

import forklog.gunicorn as fg
from forklog._check_adoption import BYPASSES, adoption_of, adoption_of_class, routing_lines, workers_writing
from forklog._check_config import LoadError, load_config, parse_command_line
from forklog._gunicorn_sinks import gunicorn_sinks
from forklog._master.buffered import BufferedSink, needs_isolation
from forklog._master.line_writer import line_formatter
from forklog._renderers import same_lines
from forklog._worker.attach import ENV, hub_answers
from forklog._worker.handler import ForkHandler
from forklog.settings import Settings, SettingsError

__all__ = ["check", "load_config", "main"]

#: forklog's hooks, as the README lists them.
HOOKS = ("on_starting", "post_fork", "worker_exit", "child_exit", "worker_abort", "on_exit")

Handlers = List[Tuple[str, logging.Handler]]


# -- what the report says about each part --------------------------------------------------


def _hooks(cfg: Any) -> Tuple[List[Tuple[str, str]], bool]:
    """(hook, what it is) rows, and whether any of them is forklog's."""
    rows: List[Tuple[str, str]] = []
    logger_class = cfg.logger_class
    ours = isinstance(logger_class, type) and issubclass(logger_class, fg.Logger)
    rows.append(("logger_class", "forklog's" if ours else f"not forklog's: {_name(logger_class)}"))
    any_ours = ours
    for hook in HOOKS:
        function = cfg.settings[hook].get()
        mine = getattr(fg, hook)
        if function is mine:
            rows.append((hook, "forklog's"))
            any_ours = True
        elif _calls(function, mine):
            rows.append((hook, f"own ({_name(function)}), calls forklog's"))
            any_ours = True
        elif getattr(function, "__module__", "") == "gunicorn.config":
            rows.append((hook, "gunicorn's default: forklog's is not installed"))
        else:
            rows.append((hook, f"own ({_name(function)}), does not call forklog's"))
    return rows, any_ours


def _calls(function: Any, target: Callable[..., Any]) -> bool:
    """Whether ``function``'s code names ``target`` (``forklog.gunicorn.post_fork(...)`` or an alias)."""
    code = getattr(function, "__code__", None)
    if code is None:
        return False
    names = code.co_names
    if "forklog" in names and target.__name__ in names:
        return True
    scope = getattr(function, "__globals__", {})
    return any(scope.get(name) is target for name in names)


def _name(obj: Any) -> str:
    if isinstance(obj, str):
        return obj
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


def _sinks(cfg: Any) -> Tuple[Handlers, List[str]]:
    """The hub's sinks as ``forklog.gunicorn`` would build them, and notes on how they were found."""
    notes: List[str] = []
    factory = fg._master.handlers
    sinks: Handlers = []
    owner = getattr(factory, "__self__", None)
    if factory is None and fg._uses_logconfig(cfg):
        notes.append("the logging config's handlers replace forklog's default sinks")
    elif factory is None:
        sinks += Settings.from_env().handlers(create=False)
    elif isinstance(owner, Settings) and getattr(factory, "__func__", None) is Settings.handlers:
        sinks += owner.handlers(create=False)
    else:
        notes.append(f"built by calling {_name(factory)}, then closed")
        sinks += _pairs(factory())
    if not fg._uses_logconfig(cfg):
        sinks += _pairs(gunicorn_sinks(cfg, create=False))
    notes += _logconfig_notes(cfg)
    return sinks, notes


def _pairs(sinks: Sequence[Any]) -> Handlers:
    """``(name, handler)`` pairs from handlers or pairs, named as the hub names them."""
    pairs: Handlers = []
    for sink in sinks:
        if isinstance(sink, tuple):
            pairs.append((str(sink[0]), sink[1]))
        else:
            pairs.append((sink.get_name() or type(sink).__name__.lower(), sink))
    return pairs


def _adoption_lines(handlers: List[Tuple[str, logging.Handler]], across_users: bool = False) -> List[str]:
    rows = []
    for owner, handler in handlers:
        what, why = adoption_of(handler, across_users)
        cls, level, target, _formatter = _describe(handler)
        rows.append((what, owner or "root", cls, level, target, f"({why})"))
    return _table(rows)


def _logconfig_notes(cfg: Any) -> List[str]:
    """gunicorn's ``logconfig_dict`` handlers, read from the dict (not built), or where the config is."""
    notes: List[str] = []
    config = getattr(cfg, "logconfig_dict", None) or {}
    for name, spec in (config.get("handlers") or {}).items():
        target = spec.get("filename") or spec.get("stream") or ""
        what, why = adoption_of_class(spec)
        notes.append(
            f"logconfig_dict handler {name}: {what} ({why}): {spec.get('class', '?')} "
            f"{spec.get('level', 'NOTSET')} {target} formatter={spec.get('formatter', '-')}".rstrip()
        )
    if config:
        notes.append(
            "logconfig_dict: its file and stream handlers are adopted; "
            "gunicorn's own lines go where plain gunicorn sends them"
        )
    for setting in ("logconfig_json", "logconfig"):
        if getattr(cfg, setting, None):
            notes.append(
                f"{setting} {getattr(cfg, setting)}: its file and stream handlers are adopted (not read here)"
            )
    return notes


def _all_handlers() -> Handlers:
    """(logger name, handler) for every handler on any logger but forklog's own, root first."""
    loggers = [logging.getLogger()] + [
        lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)
    ]
    found: Handlers = []
    for logger in loggers:
        owner = "" if logger is logging.getLogger() else logger.name
        for handler in logger.handlers:
            if not isinstance(handler, (ForkHandler, logging.NullHandler)):
                found.append((owner, handler))
    return found


def _describe(handler: logging.Handler) -> Tuple[str, str, str, str]:
    """(class, level, target, formatter) of a handler, as the report shows it."""
    level = logging.getLevelName(handler.level)
    target = "-"
    path = getattr(handler, "baseFilename", None)
    if isinstance(path, str):
        relative = os.path.relpath(path)
        target = path if relative.startswith("..") else relative
        if isinstance(handler, logging.handlers.RotatingFileHandler) and handler.maxBytes > 0:
            target += f" (rotates at {handler.maxBytes} bytes, keeps {handler.backupCount})"
    elif isinstance(handler, logging.StreamHandler):
        target = str(getattr(handler.stream, "name", handler.stream))
    elif isinstance(getattr(handler, "destination", None), str):  # syslog, OTLP
        target = handler.destination  # type: ignore[attr-defined]
    only = [f.name for f in handler.filters if isinstance(f, logging.Filter) and f.name]
    if only:
        target += f" (only {', '.join(only)})"
    formatter = handler.formatter
    fmt = getattr(formatter, "_fmt", None)
    shown = "-" if formatter is None else type(formatter).__name__
    if formatter is not None and fmt is not None and type(formatter).__name__ != "JSONFormatter":
        shown += f" {fmt!r}"
    return type(handler).__name__, str(level), target, shown


def _table(rows: Sequence[Sequence[str]], indent: str = "  ") -> List[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        (indent + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False))).rstrip()
        for row in rows
    ]


# -- the command -----------------------------------------------------------------------------


def main(argv: Sequence[str], out: TextIO = sys.stdout) -> int:
    """``python -m forklog check`` with gunicorn's command line: ``-c CONFIG [flags] [APP]``."""
    try:
        config, app, flags = parse_command_line(argv)
    except LoadError as exc:
        print(f"FAIL: {exc}", file=out)
        return 1
    return check(config, app, out, flags)


def check(config: str, app: Optional[str] = None, out: TextIO = sys.stdout, flags: Any = None) -> int:
    """Print what ``config`` (and ``app``) will do with logs; 1 if something bypasses the hub.

    ``flags``: gunicorn's command-line flags (:func:`parse_command_line`), over the file's settings.
    """

    def say(line: str) -> None:
        print(line, file=out)

    try:
        cfg = load_config(config, flags)
    except LoadError as exc:
        say(f"config {config}: does not load: {exc}")
        say("  fix: run `python " + config + "` alone to see the error, or correct the variable it names")
        return 1
    say(f"config: {config}")
    try:  # the hub's options, and its sinks unless the config gives them, come from FORKLOG_*
        Settings.from_env()
    except SettingsError as exc:
        say("FAIL: bad settings in the environment (gunicorn would exit with 1 at start):")
        for line in str(exc).splitlines():
            say(f"  {line}")
        say("  fix: correct each variable named (python -m forklog settings lists them all)")
        return 1
    hook_rows, any_ours = _hooks(cfg)
    say("hooks:")
    for line in _table(hook_rows):
        say(line)
    if cfg.accesslog is None:
        access = "on (configure(access_log=True))" if fg._master.access_log else "off (unset, as in gunicorn)"
    else:
        access = cfg.accesslog
    say(f"gunicorn: loglevel {cfg.loglevel}, errorlog {cfg.errorlog}, accesslog {access}")
    options = fg._hub_options()
    order = [field.name for field in dataclasses.fields(Settings)]
    keys = sorted(options, key=lambda key: order.index(key) if key in order else len(order))
    say("hub: " + " ".join(f"{key}={_show_option(key, options[key])}" for key in keys))

    sinks, notes = _sinks(cfg)
    say("sinks (written by the master only):")
    for line in _handler_lines(sinks):
        say(line)
    for note in notes:
        say(f"  {note}")
    if not sinks and not notes:
        say("  none: records are counted and dropped")
    elif sinks and not notes:
        lowest = min(handler.level for _name, handler in sinks)
        say(f"workers send: {logging.getLevelName(lowest)} and up (the lowest sink level)")
        say(_who_makes_lines(sinks))
    for _name, handler in sinks:
        with contextlib.suppress(Exception):
            handler.close()

    # (problem, its fix)
    problems: List[Tuple[str, str]] = []
    if os.environ.get(ENV):  # below forklog run
        address = os.environ[ENV]
        if hub_answers(address):
            say(
                f"below forklog run: the hub at {address} answers; every Python process started here attaches"
            )
        else:
            problems.append(
                (
                    f"FORKLOG_HUB={address} names no hub that answers this user: processes started here log "
                    "as without forklog",
                    "run the command below forklog run, as the hub's user (or one of FORKLOG_HUB_GROUP)",
                )
            )
        if any_ours:
            say(
                "gunicorn builds no hub of its own; the hub above writes every line, gunicorn's own where "
                "plain gunicorn sends them (stderr, errorlog, accesslog)"
            )
    if not any_ours:
        problems.append(
            (
                "the config installs none of forklog's hooks: nothing goes through a hub",
                f"add `from forklog.gunicorn import *` to {config}",
            )
        )
    attached = _all_handlers()
    bypassing = [h for _o, h in attached if adoption_of(h)[0] == BYPASSES]
    if attached:
        say("handlers the config attaches (adoption):")
        for line in _adoption_lines(attached):
            say(line)
    found_handlers: Optional[Handlers] = None  # not known without the app
    if app is not None:
        try:
            for name in fg.GUNICORN_LOGGERS:  # they exist in a worker before the app is imported
                logging.getLogger(name).disabled = False
            found = found_handlers = _app_handlers(cfg, app, {id(handler) for _owner, handler in attached})
        except LoadError as exc:
            problems.append(
                (str(exc), "check the module path, --chdir and --pythonpath, then run the app alone")
            )
        else:
            disabled = _disabled(app)
            if disabled is not None:
                problems.append(disabled)
            if found:
                across = fg._writer_credentials(cfg) is not None and not cfg.preload_app
                say(f"app {app}: handlers it attaches in each worker (adoption):")
                for line in _adoption_lines(found, across):
                    say(line)
                staying = workers_writing(found, cfg.workers, _user_name(cfg.uid)) if across else None
                if staying is not None:
                    problems.append(staying)
                bypassing += [h for _o, h in found if adoption_of(h)[0] == BYPASSES]
            else:
                say(f"app {app}: attaches no handler")
    if found_handlers is None and not attached:
        say("the app's records: not known without the app (python -m forklog check CONFIG MODULE:APP)")
    else:
        found_handlers = found_handlers or []
        in_master = [*attached, *(found_handlers if cfg.preload_app else [])]
        for line in routing_lines(attached + found_handlers, in_master):
            say(line)
    dict_handlers = (getattr(cfg, "logconfig_dict", None) or {}).get("handlers") or {}
    around = len(bypassing) + sum(adoption_of_class(spec)[0] == BYPASSES for spec in dict_handlers.values())
    if around:
        problems.append(
            (
                f"{around} handler(s) write around the hub",
                "use logging.FileHandler, RotatingFileHandler, TimedRotatingFileHandler or a StreamHandler "
                "on stdout/stderr (adopted as they are), or give the handler to the hub: "
                "forklog.gunicorn.configure(handlers=...)",
            )
        )
    for problem, fix in problems:
        say(f"FAIL: {problem}")
        say(f"  fix: {fix}")
    if not problems:
        say("ok")
    return 1 if problems else 0


def _handler_lines(handlers: Handlers) -> List[str]:
    """One aligned line per handler (name, class, level, target), its formatter on the next."""
    if not handlers:
        return []
    described = [(name, *_describe(handler)) for name, handler in handlers]
    indent = " " * (2 + max(len(name) for name, _h in handlers) + 2)
    lines: List[str] = []
    for line, row in zip(_table([row[:4] for row in described]), described, strict=False):
        lines.append(line)
        if row[4] != "-":
            lines.append(indent + row[4])
    return lines


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _show_option(key: str, value: Any) -> str:
    return str(logging.getLevelName(value)) if key == "keep_level" else str(value)


def _app_handlers(cfg: Any, app: str, before: Set[int]) -> Handlers:
    """Handlers that importing ``app`` attached to loggers (not forklog's), as gunicorn imports it."""
    # As gunicorn does before it imports the app: chdir and pythonpath go on sys.path.
    for entry in [cfg.chdir, *(cfg.pythonpath.split(",") if cfg.pythonpath else [])]:
        path = os.path.abspath(entry)
        if path not in sys.path:
            sys.path.insert(0, path)
    try:
        util.import_app(app)
    except (Exception, SystemExit) as exc:
        raise LoadError(f"app {app} does not import: {type(exc).__name__}: {exc}") from exc
    return [(owner, handler) for owner, handler in _all_handlers() if id(handler) not in before]


def _disabled(app: str) -> Optional[Tuple[str, str]]:
    """(problem, fix) when importing the app disabled gunicorn's loggers, which exist before it in a worker.

    ``dictConfig`` disables every logger that exists and that it does not
    name unless ``disable_existing_loggers`` is false, and it is true unless
    said otherwise (Flask's documented config leaves it so): gunicorn's error
    and access lines are then lost, under plain gunicorn as under forklog.
    """
    off = [name for name in fg.GUNICORN_LOGGERS if logging.getLogger(name).disabled]
    if not off:
        return None
    return (
        f"the app's logging config disables {' and '.join(off)} (dictConfig's disable_existing_loggers, "
        "true unless set): their lines (worker errors, access lines) are lost, as under plain gunicorn",
        f'add "disable_existing_loggers": False to the dict the app ({app}) gives dictConfig',
    )


def _who_makes_lines(sinks: List[Tuple[str, logging.Handler]]) -> str:
    """Whether the workers will make the lines (README, How it works), and if not, which sink says no."""
    made: List[logging.Formatter] = []
    fields = []
    for name, handler in sinks:
        if (isinstance(handler, BufferedSink) or needs_isolation(handler)) and not handler.filters:
            fields.append(name)  # syslog, OTLP: they take the fields, sent with the lines
            continue
        formatter = line_formatter(handler)
        if formatter is None:
            return (
                f"workers make the lines: no, sink {name} needs each record's fields "
                "(not a file or stream, filters, or a format forklog cannot reproduce)"
            )
        if not any(same_lines(known, formatter) for known in made):
            made.append(formatter)
    if not made:
        return "workers make the lines: no, no file or stream sink"
    also = f", and the fields while {', '.join(fields)} take(s) records" if fields else ""
    return f"workers make the lines: yes, {len(made)} per record{also}"
