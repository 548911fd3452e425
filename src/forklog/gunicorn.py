"""gunicorn server hooks: the master owns the hub, workers get a queue handler.

Use it in a gunicorn config file::

    from forklog.gunicorn import *  # the hooks and logger_class

``from forklog.gunicorn import *`` brings the hooks, with gunicorn's exact
names and signatures, and the ``logger_class`` setting, nothing else. A
config that has its own hooks calls forklog's from them::

    import forklog.gunicorn

    def post_fork(server, worker):
        forklog.gunicorn.post_fork(server, worker)
        ...  # your own code

What runs where (``notes/gunicorn-internals.md`` has the hook order):

* ``Logger`` (``logger_class``) is built by the arbiter in the master after
  gunicorn has daemonized. It creates the one hub of this master and
  attaches the process to it (:mod:`forklog._worker.adoption`): every file
  or stream handler a logging config makes from then on, in the master or
  in a worker, writes through the hub. Without a logging config
  (``logconfig_dict``, ``logconfig_json``, ``logconfig``) it makes the hub's
  handler the only handler of ``gunicorn.error`` and ``gunicorn.access``,
  and root's while the app configures no logging of its own
  (:mod:`forklog._worker.fallback`), again on every HUP (gunicorn
  re-runs ``setup()`` then and would re-add its stderr handler, H20); with
  one, gunicorn's loggers are as gunicorn and the config make them, their
  handlers adopted. It owns USR1: the master reopens the hub's files and the
  adopted targets; workers hold none.
* ``on_starting`` starts the hub's threads; ``on_exit`` stops the hub after
  every worker has been reaped, draining everything.
* A forked child can log from its first line ("Booting worker" is logged
  before ``post_fork``, H16): the handler it inherited writes to a pipe, and
  an ``os.register_at_fork`` hook gives the child fresh counters. The
  config module can be executed again on HUP: the hub lives in this module,
  imported once, so there is one hub per master (H7).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import pwd
import sys
import threading
import traceback
from typing import Any, Callable, Dict, List, Optional, Sequence, TypeVar

try:
    from gunicorn import glogging
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise ImportError("forklog.gunicorn needs gunicorn: pip install 'forklog[gunicorn]'") from exc

from forklog import _wsgi_errors as wsgi_errors
from forklog._gunicorn_sinks import gunicorn_sinks as _gunicorn_sinks
from forklog._master.hub import Hub, Sink
from forklog._master.targets import Credentials
from forklog._stderr import Reporter
from forklog._worker import adoption, fallback
from forklog._worker.attach import ENV, request_reopen
from forklog._worker.capture import LineLogger
from forklog._worker.channel import Channel
from forklog._worker.handler import ForkHandler
from forklog.settings import Settings, SettingsError

__all__ = [
    "child_exit",
    "logger_class",
    "on_exit",
    "on_starting",
    "post_fork",
    "worker_abort",
    "worker_exit",
]

#: gunicorn's own loggers, routed through the hub in every process.
GUNICORN_LOGGERS = ("gunicorn.error", "gunicorn.access")


@dataclasses.dataclass
class _Master:
    """What the config asked for, and the hub built from it."""

    handlers: Optional[Callable[[], Sequence[Sink]]] = None
    hub_options: Dict[str, Any] = dataclasses.field(default_factory=dict)
    access_log: bool = False
    stop_timeout: Optional[float] = None  # None: Settings' (FORKLOG_STOP_TIMEOUT, else 10 s)
    hub: Optional[Hub] = None
    handler: Optional[ForkHandler] = None


# Module state on purpose: gunicorn executes the config file again on every
# HUP, but this module is imported once per process, so the hub survives.
_master = _Master()
_lock = threading.Lock()


def configure(
    handlers: Optional[Callable[[], Sequence[Sink]]] = None,
    *,
    access_log: bool = False,
    stop_timeout: Optional[float] = None,
    **hub_options: Any,
) -> None:
    """Say how the master builds its hub. Safe to call on every config load.

    ``handlers`` is a callable returning the sinks (handlers, or ``(name,
    handler)`` pairs). It is called once, in the master, after gunicorn has
    daemonized, so no file is opened by a process that is about to exit.
    The default reads the ``FORKLOG_*`` variables (:class:`forklog.Settings`).
    The hub's options and ``stop_timeout`` come from those variables too,
    whatever ``handlers``, unless given here: ``hub_options`` go to
    :class:`forklog.Hub` over them. Nothing is read from the environment
    before the hub is built, so a bad variable stops gunicorn with forklog's
    own message, whatever the config. ``access_log=True`` turns
    gunicorn's access log on when the config leaves ``accesslog`` unset (as
    plain gunicorn, it is off unless set). A hub that is already running
    keeps its sinks: changes take effect at the next start.
    """
    with _lock:
        _master.handlers = handlers
        _master.hub_options = dict(hub_options)
        _master.access_log = access_log
        _master.stop_timeout = stop_timeout


def hub() -> Optional[Hub]:
    """This master's hub, once gunicorn has set up its logging."""
    return _master.hub


def _default_handlers() -> Sequence[Sink]:
    return Settings.from_env().handlers()


def _hub_options() -> Dict[str, Any]:
    """The hub's keywords: the ``FORKLOG_*`` variables', with configure()'s over them."""
    options: Dict[str, Any] = dict(Settings.from_env().hub_options())
    options.update(_master.hub_options)
    if _master.stop_timeout is not None:
        options["stop_timeout"] = _master.stop_timeout
    return options


def _uses_logconfig(cfg: Any) -> bool:
    return bool(
        getattr(cfg, "logconfig_dict", None)
        or getattr(cfg, "logconfig_json", None)
        or getattr(cfg, "logconfig", None)
    )


def _writer_credentials(cfg: Any) -> Optional[Credentials]:
    """The user gunicorn's workers run as (``user``, ``group``), when it is not the master's.

    Targets a worker asks for are then checked against that user's rights
    (forklog._master.targets' threat model).
    """
    uid, gid = getattr(cfg, "uid", None), getattr(cfg, "gid", None)
    if not isinstance(uid, int) or not isinstance(gid, int):
        return None
    if uid == os.geteuid() and gid == os.getegid():
        return None
    gids = {gid}
    if getattr(cfg, "initgroups", False):
        with contextlib.suppress(KeyError, OSError):
            gids.update(os.getgrouplist(pwd.getpwuid(uid).pw_name, gid))
    return Credentials(uid, frozenset(gids))


def _ensure_hub(cfg: Any = None, uses_logconfig: bool = False) -> Hub:
    with _lock:
        current = _master.hub
        if current is None or current.owner_pid not in (None, os.getpid()):
            try:
                options = _hub_options()
                # A logging config of the user's own replaces forklog's default
                # sinks; its handlers, gunicorn's own among them, are adopted.
                factory = _master.handlers or (list if uses_logconfig else _default_handlers)
                sinks = list(factory()) + ([] if uses_logconfig else _gunicorn_sinks(cfg))
            except SettingsError as exc:
                # Every bad variable at once, without a traceback, whatever the
                # config: gunicorn exits with 1 before it forks a worker.
                raise SystemExit(f"forklog: bad settings in the environment:\n{exc}") from None
            if os.environ.get(ENV):
                sys.stderr.write(
                    f"forklog: this gunicorn runs below forklog run (FORKLOG_HUB={os.environ[ENV]}) and "
                    "builds a hub of its own: two hubs may write the same files; run it without forklog run\n"
                )
            current = Hub(sinks, **options)
            with contextlib.suppress(SettingsError):  # reported where the sinks are made
                current.targets.file_mode = Settings.from_env().file_mode
            _master.hub = current
            _master.handler = ForkHandler(current.queue)
        return current


def _install(handler: logging.Handler, level: int) -> None:
    """Make ``handler`` the only handler of gunicorn's loggers, and root's while the app configures nothing.

    The lists are changed in place, never replaced: UvicornWorker aliases
    uvicorn's handler lists to gunicorn's, and follows along. Root is the
    application's: the hub's handler is root's only until the application
    configures logging itself (:mod:`forklog._worker.fallback`), and root's
    level is never one forklog changed from the application's.
    """
    for name in GUNICORN_LOGGERS:
        logger = logging.getLogger(name)
        for old in list(logger.handlers):
            if old is not handler:
                logger.removeHandler(old)
        if handler not in logger.handlers:
            logger.addHandler(handler)
        logger.propagate = False  # the root logger may have the same handler
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_gunicorn", False):
            root.removeHandler(old)
    fallback.install(handler, level)


def _say_if_sinkless(hub_: Hub) -> None:
    """Name at start a configuration that would lose records: the hub's handler in use, and no sink."""
    handler = _master.handler
    if hub_.sinks or handler is None:
        return
    users = [
        name or "root"
        for name, logger in [("", logging.getLogger()), *logging.Logger.manager.loggerDict.items()]
        if isinstance(logger, logging.Logger) and handler in logger.handlers
    ]
    if users:
        sys.stderr.write(
            f"forklog: the hub has no sink, yet loggers {', '.join(sorted(users))} send their records to it: "
            "they are counted in stats().unrouted and not written; give the hub sinks with "
            "forklog.gunicorn.configure(handlers=...), or name handlers for these loggers "
            "in the logging config\n"
        )


def _outer() -> Optional[Channel]:
    """The channel of the hub above this gunicorn (``forklog run``), if this master was attached to one.

    gunicorn then builds no hub of its own: its master and workers write
    through that hub, and gunicorn's own handlers (its stderr, its
    ``errorlog`` and ``accesslog`` files) stay as plain gunicorn makes them,
    adopted, so the hub above writes them.
    """
    channel = adoption.attached()
    if channel is None or not os.environ.get(ENV) or channel.read_fd is not None:
        return None
    return channel


def _reinstall(cfg: Any = None) -> None:
    hub_ = _ensure_hub(cfg)
    assert _master.handler is not None
    if not _uses_logconfig(cfg):
        _install(_master.handler, hub_.queue.level)


class Logger(glogging.Logger):  # type: ignore[misc]
    """gunicorn's logger, with the hub's handler as its only handler."""

    def setup(self, cfg: Any) -> None:
        if _outer() is not None:  # below forklog run: its hub writes what gunicorn's handlers write
            super().setup(cfg)
            return
        logconfig = _uses_logconfig(cfg)
        if _master.access_log and cfg.accesslog is None and not logconfig:
            # configure(access_log=True): gunicorn skips access lines unless
            # this is set. Its own handler for it is never made. (A logging
            # config turns them on in gunicorn itself.)
            cfg.set("accesslog", "-")
        # The hub first: every file or stream handler a logging config makes
        # from here on (logconfig_dict, logconfig_json, logconfig, an app
        # loaded with --preload) is adopted as it is added, and its file is
        # written by the master's listener alone. On HUP the hub keeps its
        # sinks; the re-run config's handlers write to the same targets (H20).
        hub_ = _ensure_hub(cfg, uses_logconfig=logconfig)
        hub_.targets.writer = _writer_credentials(cfg)
        wsgi_errors.serve(hub_, _master.handler)
        if logconfig:
            wsgi_errors.wrap()
        adoption.attach(hub_.queue, trust=hub_.targets.trust)
        super().setup(cfg)
        _reinstall(cfg)
        _say_if_sinkless(hub_)
        # Start here as well as in on_starting: this runs in the master after
        # gunicorn daemonized, whatever hooks the config kept or replaced.
        if hub_.owner_pid is None:
            hub_.start()

    def _set_handler(self, log: logging.Logger, output: Any, fmt: Any, stream: Any = None) -> None:
        if _uses_logconfig(self.cfg) or _outer() is not None:
            # With a logging config gunicorn's own handlers stay as gunicorn
            # makes them, adopted: its lines go where plain gunicorn sends them.
            super()._set_handler(log, output, fmt, stream)
            return
        # gunicorn would open its own stderr/file handlers here; the hub's
        # sinks replace them. Handlers of gunicorn's own making are dropped.
        for handler in list(log.handlers):
            if getattr(handler, "_gunicorn", False):
                log.removeHandler(handler)

    def reopen_files(self) -> None:
        # USR1. The master reopens the hub's files; a worker holds none of them.
        if _outer() is not None:
            request_reopen()  # the hub above holds the files: it reopens them (logrotate's USR1)
            return
        super().reopen_files()
        hub_ = _master.hub
        if hub_ is not None and hub_.owner_pid == os.getpid():
            hub_.reopen()


logger_class = Logger


_Hook = TypeVar("_Hook", bound=Callable[..., None])
_hook_reporter = Reporter()
#: Exceptions forklog's hooks kept out of gunicorn, by hook name.
hook_faults: Dict[str, int] = {}


def _contained(hook: _Hook) -> _Hook:
    """A hook that never lets an exception into gunicorn's arbiter: counted, said on stderr at a bounded rate.

    gunicorn's master treats an exception from a hook as a fault of its main
    loop, stops every worker and exits; a worker's doing (its shared memory
    truncated, then its death) must never get that far (issue 21, item 4).
    """

    @functools.wraps(hook)
    def contained(*args: Any) -> None:
        try:
            hook(*args)
        except Exception as exc:  # noqa: BLE001
            name = hook.__name__
            hook_faults[name] = hook_faults.get(name, 0) + 1
            _hook_reporter.report(
                f"hook:{name}", f"forklog: the {name} hook failed; gunicorn goes on: {exc!r}"
            )

    return contained  # type: ignore[return-value]


def on_starting(server: Any) -> None:
    """Master, once, after daemonizing: start the hub's threads."""
    if _outer() is not None:
        return
    hub_ = _ensure_hub(server.cfg)
    if hub_.owner_pid is None:
        hub_.start()
    _reinstall(server.cfg)


def post_fork(server: Any, worker: Any) -> None:
    """Worker: gunicorn's loggers keep the hub's handler; root's is the app's (forklog._worker.fallback).

    With gunicorn's ``capture_output``, the worker's ``print()`` and
    ``sys.stderr`` writes become records too (:mod:`forklog._worker.capture`).
    """
    if _master.handler is not None and _master.hub is not None and not _uses_logconfig(server.cfg):
        _install(_master.handler, _master.hub.queue.level)
    if getattr(server.cfg, "capture_output", False):
        sys.stdout = LineLogger(logging.getLogger("stdout"), logging.INFO, "<stdout>", sys.__stdout__)
        sys.stderr = LineLogger(logging.getLogger("stderr"), logging.WARNING, "<stderr>", sys.__stderr__)


@_contained
def worker_exit(server: Any, worker: Any) -> None:
    """Worker (normally): report drops not reported yet, and mark the exit. In the master: nothing."""
    outer = _outer()
    if outer is not None and outer.pid == os.getpid() and os.getpid() != server.pid:
        outer.leave(timeout=0.5)
        return
    hub_ = _master.hub
    if hub_ is None or hub_.owner_pid == os.getpid():
        return  # gunicorn also calls this in the master (kill_worker, ESRCH)
    hub_.queue.leave(timeout=0.5)


@_contained
def child_exit(server: Any, worker: Any) -> None:
    """Master: a worker is gone; the hub stops waiting for its unfinished records."""
    if _master.hub is not None:
        _master.hub.process_exited(worker.pid)


@_contained
def worker_abort(worker: Any) -> None:
    """Worker, on timeout (SIGABRT): log every thread's stack before the SIGKILL."""
    frames = sys._current_frames()
    names = {thread.ident: thread.name for thread in threading.enumerate()}
    parts: List[str] = []
    for ident, frame in frames.items():
        parts.append(f"Thread {names.get(ident, ident)}:\n{''.join(traceback.format_stack(frame))}")
    logging.getLogger("gunicorn.error").critical(
        "worker %s timed out; stack of every thread:\n%s", os.getpid(), "\n".join(parts)
    )
    if _master.hub is not None:
        _master.hub.queue.flush(timeout=0.2)


@_contained
def on_exit(server: Any) -> None:
    """Master, after every worker is reaped: drain the hub, then close the sinks."""
    outer = _outer()
    if outer is not None:
        outer.flush(timeout=0.5)  # the hub above drains when its last process has exited
    if _master.hub is not None:
        _master.hub.stop()
