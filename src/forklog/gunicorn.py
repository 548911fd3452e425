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
  gunicorn has daemonized. It creates the one hub of this master, then
  makes the hub's handler the only handler of ``gunicorn.error``,
  ``gunicorn.access`` and the root logger, and does that again on every HUP
  (gunicorn re-runs ``setup()`` then and would re-add its stderr handler,
  H20). It owns USR1: the master reopens the hub's files; workers hold none.
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
import logging
import os
import sys
import threading
import traceback
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

try:
    from gunicorn import glogging
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise ImportError("forklog.gunicorn needs gunicorn: pip install 'forklog[gunicorn]'") from exc

from forklog.master.hub import Hub, Sink
from forklog.master.sinks import RotatingFileSink
from forklog.settings import Settings
from forklog.worker.capture import LineLogger
from forklog.worker.handler import ForkHandler

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
    access_log: bool = True
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
    access_log: bool = True,
    stop_timeout: Optional[float] = None,
    **hub_options: Any,
) -> None:
    """Say how the master builds its hub. Safe to call on every config load.

    ``handlers`` is a callable returning the sinks (handlers, or ``(name,
    handler)`` pairs). It is called once, in the master, after gunicorn has
    daemonized, so no file is opened by a process that is about to exit.
    The default reads the ``FORKLOG_*`` variables (:class:`forklog.Settings`),
    and so do the hub's options and ``stop_timeout`` then, unless given.
    ``hub_options`` go to :class:`forklog.Hub` (``Settings.hub_options()``
    gives all of them, ``stop_timeout`` included). A hub that is already
    running keeps its sinks: changes take effect at the next start.
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
    """The hub's keywords: configure()'s; the ``FORKLOG_*`` variables' when it gave no handlers."""
    options: Dict[str, Any] = {"stop_timeout": Settings.stop_timeout}
    if _master.handlers is None:
        options.update(Settings.from_env().hub_options())
    options.update(_master.hub_options)
    if _master.stop_timeout is not None:
        options["stop_timeout"] = _master.stop_timeout
    return options


def _gunicorn_sinks(cfg: Any, *, create: bool = True) -> List[Sink]:
    """gunicorn's own ``errorlog`` and ``accesslog`` files, as sinks of the hub.

    Each gets only its logger's records, in gunicorn's own line format. "-"
    (stderr, stdout) is left to the console sink. ``create=False`` opens no
    file (``python -m forklog check`` only looks at them).
    """
    sinks: List[Sink] = []
    if cfg is None:
        return sinks
    wanted = (
        ("errorlog", cfg.errorlog, "gunicorn.error", glogging.Logger.error_fmt, glogging.Logger.datefmt),
        ("accesslog", cfg.accesslog, "gunicorn.access", glogging.Logger.access_fmt, None),
    )
    for name, path, logger, fmt, datefmt in wanted:
        if path and path != "-":
            sink = RotatingFileSink(
                path, maxBytes=0, encoding="utf-8", delay=not create, errors="backslashreplace"
            )
            sink.setLevel(logging.DEBUG)
            sink.setFormatter(logging.Formatter(fmt, datefmt))
            sink.addFilter(logging.Filter(logger))
            sinks.append((name, sink))
    return sinks


def _uses_logconfig(cfg: Any) -> bool:
    return bool(
        getattr(cfg, "logconfig_dict", None)
        or getattr(cfg, "logconfig_json", None)
        or getattr(cfg, "logconfig", None)
    )


class _Reach(logging.Filter):
    """The records a handler on logger ``owner`` would get through propagation."""

    def __init__(self, owner: str, blocked: Set[str]) -> None:
        super().__init__()
        self.owner = owner  # "" for the root logger
        self.blocked = frozenset(blocked)  # loggers with propagate=False

    def filter(self, record: logging.LogRecord) -> bool:
        name = record.name
        while name != self.owner:
            if not name or name in self.blocked:
                return False  # not below the owner, or cut off on the way up
            name = name.rpartition(".")[0]
        return True


def _take_configured_handlers() -> List[Tuple[str, logging.Handler]]:
    """Detach every handler a logging config attached to a logger in this process.

    Each comes back as a ``(name, handler)`` sink with a filter that lets
    through what propagation would have brought it (``propagate`` as the
    config left it).
    """
    own = _master.handler
    named = [lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)]
    blocked = {lg.name for lg in named if not lg.propagate}
    taken: List[Tuple[str, logging.Handler]] = []
    for logger in [logging.getLogger(), *named]:
        owner = "" if logger is logging.getLogger() else logger.name
        for handler in list(logger.handlers):
            if handler is own or isinstance(handler, ForkHandler):
                continue
            logger.removeHandler(handler)  # in place: aliases of the list follow
            handler.addFilter(_Reach(owner, blocked))
            label = handler.get_name() or type(handler).__name__.lower()
            taken.append((f"{owner or 'root'}:{label}", handler))
    return taken


def _ensure_hub(cfg: Any = None, configured: Sequence[Sink] = (), uses_logconfig: bool = False) -> Hub:
    with _lock:
        current = _master.hub
        if current is None or current.owner_pid not in (None, os.getpid()):
            options = _hub_options()
            # A logging config of the user's own replaces forklog's default sinks.
            factory = _master.handlers or (list if uses_logconfig else _default_handlers)
            sinks = list(factory()) + _gunicorn_sinks(cfg) + list(configured)
            current = Hub(sinks, **options)
            _master.hub = current
            _master.handler = ForkHandler(current.queue)
        return current


def _install(handler: logging.Handler, level: int) -> None:
    """Make ``handler`` the only handler of root and gunicorn's loggers.

    The lists are changed in place, never replaced: UvicornWorker aliases
    uvicorn's handler lists to gunicorn's, and follows along.
    """
    for name in ("", *GUNICORN_LOGGERS):
        logger = logging.getLogger(name)
        for old in list(logger.handlers):
            if old is not handler:
                logger.removeHandler(old)
        if handler not in logger.handlers:
            logger.addHandler(handler)
        if name:
            logger.propagate = False  # the root logger has the same handler
    root = logging.getLogger()
    if root.level > level:
        root.setLevel(level)


def _reinstall(cfg: Any = None) -> None:
    hub_ = _ensure_hub(cfg)
    assert _master.handler is not None
    _install(_master.handler, hub_.queue.level)


class Logger(glogging.Logger):  # type: ignore[misc]
    """gunicorn's logger, with the hub's handler as its only handler."""

    def setup(self, cfg: Any) -> None:
        if _master.access_log and cfg.accesslog is None:
            # forklog turns the access log on by default; gunicorn skips access
            # lines unless this is set. Its own handler for it is never made.
            cfg.set("accesslog", "-")
        super().setup(cfg)
        # Handlers a logging config made (logconfig_dict, logconfig_json,
        # logconfig, or the config file itself) become the hub's sinks, so
        # only the master writes them; on HUP the hub keeps its sinks and the
        # copies the re-run config just made are closed (H20).
        configured = _take_configured_handlers()
        if _master.hub is None or _master.hub.owner_pid not in (None, os.getpid()):
            _ensure_hub(cfg, configured, uses_logconfig=_uses_logconfig(cfg))
        else:
            for _name, handler in configured:
                with contextlib.suppress(Exception):
                    handler.close()
        _reinstall(cfg)
        # Start here as well as in on_starting: this runs in the master after
        # gunicorn daemonized, whatever hooks the config kept or replaced.
        hub_ = _master.hub
        if hub_ is not None and hub_.owner_pid is None:
            hub_.start()

    def _set_handler(self, log: logging.Logger, output: Any, fmt: Any, stream: Any = None) -> None:
        # gunicorn would open its own stderr/file handlers here; the hub's
        # sinks replace them. Handlers of gunicorn's own making are dropped.
        for handler in list(log.handlers):
            if getattr(handler, "_gunicorn", False):
                log.removeHandler(handler)

    def reopen_files(self) -> None:
        # USR1. The master reopens the hub's files; a worker holds none of them.
        super().reopen_files()
        hub_ = _master.hub
        if hub_ is not None and hub_.owner_pid == os.getpid():
            hub_.reopen()


logger_class = Logger


def on_starting(server: Any) -> None:
    """Master, once, after daemonizing: start the hub's threads."""
    hub_ = _ensure_hub(server.cfg)
    if hub_.owner_pid is None:
        hub_.start()
    _reinstall(server.cfg)


def post_fork(server: Any, worker: Any) -> None:
    """Worker: the hub's handler is the only handler (it already was since the fork).

    With gunicorn's ``capture_output``, the worker's ``print()`` and
    ``sys.stderr`` writes become records too (:mod:`forklog.worker.capture`).
    """
    if _master.handler is not None and _master.hub is not None:
        _install(_master.handler, _master.hub.queue.level)
    if getattr(server.cfg, "capture_output", False):
        sys.stdout = LineLogger(logging.getLogger("stdout"), logging.INFO, "<stdout>")
        sys.stderr = LineLogger(logging.getLogger("stderr"), logging.WARNING, "<stderr>")


def worker_exit(server: Any, worker: Any) -> None:
    """Worker (normally): report drops not reported yet. In the master: nothing."""
    hub_ = _master.hub
    if hub_ is None or hub_.owner_pid == os.getpid():
        return  # gunicorn also calls this in the master (kill_worker, ESRCH)
    hub_.queue.flush(timeout=0.5)


def child_exit(server: Any, worker: Any) -> None:
    """Master: a worker is gone; the hub stops waiting for its unfinished records."""
    if _master.hub is not None:
        _master.hub.process_exited(worker.pid)


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


def on_exit(server: Any) -> None:
    """Master, after every worker is reaped: drain the hub, then close the sinks."""
    if _master.hub is not None:
        _master.hub.stop()
