"""forklog: the logging hub of pre-fork servers and process pools.

One process (the gunicorn master, or a pool's parent) owns a :class:`Hub`:
the queue and the only listener, which writes every sink. Every other
process gets a queue handler onto it (:func:`init_worker`, or the hooks in
:mod:`forklog.gunicorn`). Importing forklog has no side effects.
"""

from forklog._master.hub import Hub, HubStats
from forklog._master.sinks import RotatingFileSink
from forklog._worker.attach import Handler, attach
from forklog._worker.channel import Channel
from forklog._worker.context import ContextFilter, bind, bound, bound_fields, unbind
from forklog._worker.handler import ForkHandler, init_worker
from forklog.formatters import JSONFormatter, TextFormatter
from forklog.settings import Settings, SettingsError
from forklog.syslog import SyslogSink

__version__ = "0.1.0"

__all__ = [
    "Channel",
    "ContextFilter",
    "ForkHandler",
    "Handler",
    "Hub",
    "HubStats",
    "JSONFormatter",
    "RotatingFileSink",
    "Settings",
    "SettingsError",
    "SyslogSink",
    "TextFormatter",
    "__version__",
    "attach",
    "bind",
    "bound",
    "bound_fields",
    "init_worker",
    "unbind",
]
