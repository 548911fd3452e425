"""Adoption: the file and stream handlers an application configures write through the master.

Applications configure logging themselves: Django's ``django.setup()``
runs ``dictConfig(LOGGING)`` in every worker, Flask's documentation calls
``dictConfig`` at import, structlog puts a ``ProcessorFormatter`` on a
handler, gunicorn users pass ``logconfig_dict``. Each worker would then
open, write and rotate the same files itself (DESIGN H22).

In a process attached to a hub (:func:`attach`: the gunicorn master, its
workers, a pool child after ``init_worker``), every handler added to a
logger from then on (``Logger.addHandler``, which ``dictConfig``,
``fileConfig``, ``basicConfig`` and code at import all go through), and
every handler already on a logger, is *adopted* when its I/O is a local file
or a standard stream (:func:`forklog._wire.adopted_lines.spec_of`). The handler object
stays where the application put it, with its level, filters and formatter,
so loggers, propagation and filtering behave exactly as configured (H23).
Only its ``emit`` changes: it formats the record here, in the process that
has the live record (structlog's event dict, ``exc_info``, a ``{``-style
format, a ``Formatter`` subclass: H24), and sends the line to the master,
which appends it to the one sink it keeps for that file (:mod:`forklog._master.targets`).
The handler's own file is closed here: no worker holds it (H25).

Other handlers (``AdminEmailHandler``, Sentry's, one of the app's own) are
left alone.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import logging.config
import os
import sys
import threading
import types
from typing import Any, Callable, Dict, Optional, Set, Tuple

from forklog import _fork
from forklog._master import customized
from forklog._wire import adopted_lines
from forklog._worker import fallback
from forklog._worker.channel import Channel
from forklog.formatters import JSONFormatter
from forklog.settings import Settings

__all__ = ["adopt", "adopted", "attach", "attached"]

#: The channel of this process's hub, once attached. Module state on
#: purpose: ``Logger.addHandler`` is process-wide, and so is the hub a
#: process writes to. A forked child inherits it with the channel.
_channel: Optional[Channel] = None
#: In the hub's owner: says a target is the owner's own (see Targets.trust).
#: A child never inherits it (_after_fork_in_child).
_trust: Optional[Callable[[bytes, Dict[str, Any]], None]] = None
#: FORKLOG_ADOPTED_FILES=console (containers): file handlers write to this
#: standard stream instead, each line as it is, or as the ``message`` of a
#: JSON object (a JSON console). Read at :func:`attach`.
_to_console: Optional[Tuple[str, bool]] = None
_lock = threading.RLock()
_original_add_handler = logging.Logger.addHandler
_original_basic_config = logging.basicConfig
_original_set_level = logging.Logger.setLevel


def attached() -> Optional[Channel]:
    """The channel adopted handlers write to in this process, if any."""
    return _channel


def attach(channel: Channel, trust: Optional[Callable[[bytes, Dict[str, Any]], None]] = None) -> None:
    """Adopt the file and stream handlers on every logger, now and whenever one is added.

    ``trust`` is given in the hub's owner only: targets the owner's own
    configuration names are opened without the checks a target asked for
    through the pipe gets.
    """
    global _channel, _trust, _to_console  # noqa: PLW0603 - see the module state above
    with _lock:
        _channel = channel
        _trust = trust
        _to_console = _console_instead()
        _install_hooks()
        manager = logging.Logger.manager
        loggers = [logging.getLogger()] + [
            lg for lg in list(manager.loggerDict.values()) if isinstance(lg, logging.Logger)
        ]
        for logger in loggers:
            for handler in list(logger.handlers):
                adopt(handler)


def _console_instead() -> Optional[Tuple[str, bool]]:
    """(stream, as JSON) when FORKLOG_ADOPTED_FILES sends file handlers' lines to the console."""
    try:
        settings = Settings.from_env()
    except Exception:  # noqa: BLE001 - bad settings are said where the hub's sinks are made, in the master
        return None
    if settings.adopted_files != "console":
        return None
    return settings.console, settings.console_format == "json"


def detach() -> None:
    """Adopt nothing more (handlers already adopted keep writing through the hub)."""
    global _channel, _trust  # noqa: PLW0603
    with _lock:
        _channel = None
        _trust = None


def adopted(handler: logging.Handler) -> Optional[adopted_lines.TargetSpec]:
    """The target ``handler`` writes to through the hub, if it was adopted."""
    spec = handler.__dict__.get("_forklog_target")
    return adopted_lines.TargetSpec.from_bytes(spec) if isinstance(spec, bytes) else None


def adopt(handler: logging.Handler) -> bool:
    """Make ``handler`` write through this process's hub, if its I/O is a local file or stream."""
    channel = _channel
    if channel is None or "_forklog_target" in handler.__dict__:
        return "_forklog_target" in handler.__dict__
    if handler.__dict__.get("_forklog_sink"):
        return False  # one of the hub's own sinks, on a logger too: the listener writes it
    as_json = False
    try:
        spec = adopted_lines.spec_of(handler)
        if spec is None:
            return False
        console = _to_console
        if console is not None and spec.kind != "stream":
            spec, as_json = adopted_lines.TargetSpec("stream", console[0]), console[1]
        spec.check()
        data = spec.to_bytes()
    except Exception:  # noqa: BLE001 - a handler of a strange shape stays as it is
        return False
    trust = _trust
    if trust is None and spec.kind != "stream" and os.geteuid() != channel.owner_uid:
        # The master opens no file a process of another user names (master/targets.py's
        # threat model): this one writes its file itself, as without forklog.
        _say_once(
            spec.path,
            f"forklog: pid {os.getpid()} runs as uid {os.geteuid()}, the hub's master as uid "
            f"{channel.owner_uid}: the handler for {spec.path} stays in this process and writes the file "
            "itself; to have the master write it, configure it in the master (--preload or logconfig_dict)\n",
        )
        return False
    custom = {} if spec.kind == "stream" else customized.custom_of(handler)  # kept by the master if it can
    if trust is not None:
        trust(data, custom)
    elif custom:
        _say_once(spec.path + "\0custom", customized.worker_only(spec.path, custom))
    handler.acquire()
    try:
        handler._forklog_target = data  # type: ignore[attr-defined]
        handler._forklog_json = as_json  # type: ignore[attr-defined]
        # What the target was made from: a new file name or stream is a new target (see _emit).
        watched = "baseFilename" if isinstance(handler, logging.FileHandler) else "stream"
        handler._forklog_watch = watched  # type: ignore[attr-defined]
        handler._forklog_made_from = getattr(handler, watched)  # type: ignore[attr-defined]
        handler.emit = types.MethodType(_emit, handler)  # type: ignore[method-assign]
        if isinstance(handler, logging.FileHandler):
            # Its file is the master's to write. In the owner, what the
            # handler wrote before is flushed; in a child, the stream may be
            # the parent's with the parent's bytes in its buffer (H6): its
            # descriptor is let go of without a flush.
            if trust is None:
                _fork.release_descriptors(handler)
            stream, handler.stream = handler.stream, None
            if stream is not None:
                with contextlib.suppress(Exception):
                    stream.close()
            handler.flush = types.MethodType(_no_flush, handler)  # type: ignore[method-assign]
    finally:
        handler.release()
    return True


_said: Set[str] = set()


def _say_once(key: str, text: str) -> None:
    if key not in _said and len(_said) < 1000:
        _said.add(key)
        last_resort(text)


def _no_flush(self: logging.Handler) -> None:
    """An adopted file handler holds no stream: the master flushes the file."""


def _emit(self: logging.Handler, record: logging.LogRecord) -> None:
    """An adopted handler's ``emit``: format here, the master writes the line."""
    moved = getattr(self, self._forklog_watch) is not self._forklog_made_from  # type: ignore[attr-defined]
    if moved and not _retarget(self):
        self.emit(record)  # no longer adopted: the handler's own emit, as without forklog
        return
    try:
        text = self.format(record)
    except RecursionError:
        raise
    except Exception:  # noqa: BLE001 - as the stdlib's emit: the logging contract
        self.handleError(record)
        return
    terminator = getattr(self, "terminator", "\n")
    if self.__dict__.get("_forklog_json"):
        text, terminator = _json_line(record, text), "\n"
    channel = _channel
    target = self._forklog_target  # type: ignore[attr-defined]
    sent = channel is not None and channel.send_text(target, record, text, terminator)
    if not sent and (channel is None or channel.hub_gone):
        last_resort(text + terminator)


def _retarget(handler: logging.Handler) -> bool:
    """The app pointed ``handler`` elsewhere (a new ``baseFilename`` then ``close()``, ``setStream()``).

    The stdlib's handler then writes to the new file or stream: so does the
    adopted one, through the master, when the new target can be adopted;
    otherwise (a stream that is not stdout or stderr, a file the master opens
    for no worker of another user) it is given back its own ``emit`` and
    writes it itself, as without forklog. False then.
    """
    with _lock:
        watched = handler._forklog_watch  # type: ignore[attr-defined]
        now = getattr(handler, watched)
        if now is handler._forklog_made_from:  # type: ignore[attr-defined]
            return True  # another thread did it
        if watched == "baseFilename" and isinstance(now, str) and not os.path.isabs(now):
            handler.baseFilename = now = os.path.abspath(now)  # type: ignore[attr-defined]
        for name in ("_forklog_target", "emit", "flush", "_forklog_made_from"):
            handler.__dict__.pop(name, None)
        if adopt(handler):
            return True
        handler.__dict__.pop("_forklog_watch", None)
        return False


_JSON = JSONFormatter()


def _json_line(record: logging.LogRecord, text: str) -> str:
    """The line the app's handler made, as the ``message`` of the JSON console's object for ``record``."""
    shown = logging.makeLogRecord(record.__dict__)
    shown.msg, shown.args, shown.exc_info, shown.exc_text, shown.stack_info = text, None, None, None, None
    return _JSON.format(shown)


def last_resort(text: str) -> None:
    """Write ``text`` to this process's stderr: the hub has stopped (as ``logging.lastResort``)."""
    stream = sys.stderr
    with contextlib.suppress(Exception):
        if stream is None or getattr(stream, "closed", False):
            os.write(2, text.encode("utf-8", "backslashreplace"))
            return
        stream.write(text)
        stream.flush()


def _add_handler(self: logging.Logger, hdlr: logging.Handler) -> None:
    _original_add_handler(self, hdlr)
    if _channel is not None:
        with _lock:
            adopt(hdlr)
        fallback.noticed(self, hdlr)


def _set_level(self: logging.Logger, level: Any) -> None:
    _original_set_level(self, level)
    fallback.level_noticed(self)


def _basic_config(**kwargs: Any) -> None:
    """``basicConfig`` that does not count forklog's own handler on the root logger.

    The hub's handler is root's while the application configures nothing
    (:mod:`forklog._worker.fallback`); the stdlib's ``basicConfig`` would see
    a configured root and do nothing. It makes way, as if it were not there:
    the handler ``basicConfig`` adds is the application configuring its
    logging, and is adopted. If it adds none (it raised), the hub's stays.
    """
    root = logging.getLogger()
    ours = [h for h in root.handlers if fallback.is_forklogs(h)]
    if _channel is None or not ours or len(ours) != len(root.handlers):
        _original_basic_config(**kwargs)
        return
    with _lock:
        for handler in ours:
            root.handlers.remove(handler)
        try:
            _original_basic_config(**kwargs)
        finally:
            if not root.handlers:  # it raised (a path it cannot open): as it was
                root.handlers.extend(ours)


@functools.cache
def _install_hooks() -> None:
    # Installed once, on first attach, never at import (importing forklog has
    # no side effects). Class-level: every logger, the root one included.
    logging.Logger.addHandler = _add_handler  # type: ignore[method-assign]
    logging.Logger.setLevel = _set_level  # type: ignore[method-assign]
    logging.basicConfig = _basic_config
    for name in ("dictConfig", "fileConfig"):  # looked up when called (Django's import_string)
        setattr(logging.config, name, fallback.configuring(getattr(logging.config, name)))
    _fork.on_fork(after_in_child=_after_fork_in_child)


def _after_fork_in_child() -> None:
    global _trust, _lock  # noqa: PLW0603
    _trust = None  # a child's targets are asked for through the pipe, and checked
    _lock = threading.RLock()  # another thread of the parent may have held it
