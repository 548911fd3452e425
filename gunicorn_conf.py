"""gunicorn config for the forklog demo: ``gunicorn -c gunicorn_conf.py app:app``.

The master owns forklog's hub (the only writer of every log file); each
worker logs through a queue handler onto it. Sinks and the hub's options
come from the ``FORKLOG_*`` variables (docs/configuration.md): by default
``logs/app.log`` (rotating, 10 MiB x 5, DEBUG and up) and the console (INFO
and up). gunicorn executes this file in the master before it forks any
worker, and again on every HUP; forklog keeps one hub.
"""

import os

from forklog.gunicorn import *  # noqa: F403 - the hooks and logger_class

bind = os.environ.get("BIND", "127.0.0.1:8000")
# gunicorn logs no access lines unless this is set; forklog keeps that rule.
# Here they go to the hub's sinks ("-": through the hub, not gunicorn's stdout).
accesslog = "-"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
