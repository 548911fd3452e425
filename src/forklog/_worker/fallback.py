"""The hub's handler on the root logger, only while the application configures no logging of its own.

An application that configures nothing gets the hub's sinks: the hub's
handler is root's, and root's level is lowered to the lowest level a sink
wants, so a worker's ``logger.info`` reaches them. Once the application
configures logging itself, forklog steps aside and the stdlib's rules are
the whole story (issue 22, item 1):

* ``dictConfig``, ``fileConfig``, ``basicConfig``, or a handler the
  application adds to any logger (its own ``addHandler`` at import, a
  ``QueueHandler`` of its own) take the hub's handler off root for good, in
  this process and in the processes it forks: from then on a record finds
  the handlers it would find without forklog, and one that finds none goes
  to ``logging.lastResort`` as in the stdlib. A ``NullHandler``, gunicorn's
  own handlers and forklog's are not the application configuring anything;
* ``basicConfig`` sees root as the application left it (the hub's handler
  does not count), so it configures what it would without forklog;
* forklog lowers root's level only from the stdlib's untouched default
  (``WARNING``), never one the application set (:meth:`logging.Logger.setLevel`
  on root is watched), and gives ``WARNING`` back when it steps aside.

gunicorn's own loggers are not root: :mod:`forklog.gunicorn` routes them.
"""

from __future__ import annotations

import functools
import logging
import threading
from typing import Any, Callable, Iterator, Optional

__all__ = ["configured", "configuring", "install", "is_forklogs", "noticed", "reset", "root_level_set"]

#: The hub's handler while it is root's (None once the application configured logging).
_handler: Optional[logging.Handler] = None
#: The level forklog gave root, while it is still root's level.
_lowered: Optional[int] = None
#: The application configured logging (sticky: inherited by forked children).
_configured = False
#: The application set root's level itself.
_level_set = False
_lock = threading.RLock()


def configured() -> bool:
    """True once the application configured logging in this process (or its parent before the fork)."""
    return _configured


def root_level_set() -> bool:
    return _level_set


def is_forklogs(handler: logging.Handler) -> bool:
    """A handler of forklog's own making: the hub's handler, a hub's sink."""
    from forklog._worker.handler import ForkHandler  # noqa: PLC0415 - a cycle otherwise

    return isinstance(handler, ForkHandler) or bool(handler.__dict__.get("_forklog_sink"))


def _configures(handler: logging.Handler) -> bool:
    """Whether adding ``handler`` is the application configuring its logging."""
    return not (
        isinstance(handler, logging.NullHandler)
        or is_forklogs(handler)
        or getattr(handler, "_gunicorn", False)
    )


def install(handler: logging.Handler, level: int) -> bool:
    """Make ``handler`` root's, and root's level ``level`` at most, unless the application configured logging.

    Called at attach (the gunicorn master's ``setup``, ``post_fork``, a pool
    child's ``init_worker``) and again on gunicorn's HUP. True if it is root's.
    """
    global _handler, _lowered  # noqa: PLW0603 - module state: logging's is too
    root = logging.getLogger()
    with _lock:
        if not _configured and any(_configures(h) for h in _every_handler()):
            _step_aside()
        if _configured:
            return False
        for old in list(root.handlers):
            if old is not handler and is_forklogs(old):
                root.removeHandler(old)  # an earlier hub's handler (a HUP, a second init_worker)
        if handler not in root.handlers:
            root.handlers.append(handler)  # not through addHandler: it is not the application's
        _handler = handler
        if not _level_set and root.level in (logging.WARNING, _lowered) and root.level > level:
            _set_root_level(level)
            _lowered = level
        return True


def noticed(logger: logging.Logger, handler: logging.Handler) -> None:
    """``logger.addHandler(handler)`` happened: the application configures logging (unless it is ours)."""
    if not _configured and _configures(handler):
        with _lock:
            _step_aside()


def configuring(function: Callable[..., Any]) -> Callable[..., Any]:
    """``dictConfig`` or ``fileConfig``: the application configures its logging, whatever it names."""

    @functools.wraps(function)
    def configure(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        finally:
            with _lock:
                _step_aside()

    configure.__forklog_wrapped__ = True  # type: ignore[attr-defined]
    return configure


def level_noticed(logger: logging.Logger) -> None:
    """``logger.setLevel(...)`` happened: on root, the level is the application's from now on."""
    global _level_set, _lowered  # noqa: PLW0603
    if logger is logging.getLogger() and not _setting.active:
        _level_set = True
        _lowered = None


def _step_aside() -> None:
    global _handler, _lowered, _configured  # noqa: PLW0603
    _configured = True
    root = logging.getLogger()
    if _handler is not None and _handler in root.handlers:
        root.removeHandler(_handler)
    _handler = None
    if _lowered is not None and root.level == _lowered and not _level_set:
        _set_root_level(logging.WARNING)  # the stdlib's default: the application never set one
    _lowered = None


class _Setting(threading.local):
    active = False


_setting = _Setting()


def _set_root_level(level: int) -> None:
    _setting.active = True
    try:
        logging.getLogger().setLevel(level)
    finally:
        _setting.active = False


def _every_handler() -> Iterator[logging.Handler]:
    yield from logging.getLogger().handlers
    for logger in list(logging.Logger.manager.loggerDict.values()):
        if isinstance(logger, logging.Logger):
            yield from logger.handlers


def reset() -> None:
    """Forget the application's configuration (tests that configure logging in one process, in turn)."""
    global _handler, _lowered, _configured, _level_set
    with _lock:
        _handler, _lowered, _configured, _level_set = None, None, False, False
