"""gunicorn config for the forklog demo: ``gunicorn -c gunicorn_conf.py app:app``.

The master owns forklog's hub (the only writer of every log file); each
worker logs through a queue handler onto it. Sinks come from the
``FORKLOG_*`` variables (see README): by default ``logs/app.log`` (rotating,
10 MiB x 5, DEBUG and up) and the console (INFO and up).
gunicorn executes this file again on every HUP; forklog keeps one hub.
"""

import os

import forklog.gunicorn
from forklog import Settings
from forklog.gunicorn import *  # noqa: F403 - the hooks and logger_class

settings = Settings.from_env()  # fails here, naming the variable, if one is wrong

forklog.gunicorn.configure(handlers=settings.handlers, queue_size=settings.queue_size)

bind = os.environ.get("BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
