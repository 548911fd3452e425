"""A Celery project as its users write one, for the ``forklog run`` tests (issue 24).

Its own logging: a ``setup_logging`` handler runs ``dictConfig`` with a
64 KiB ``RotatingFileHandler`` (``TASK_LOG``), and tasks log through
``get_task_logger``. ``CELERY_FORKLOG=worker_init``: no wrapper; the
worker's main process starts a hub in ``worker_init``
(``forklog.run.start_hub``) and the config names ``forklog.Handler``.
"""

import logging.config
import os
import time
from typing import Any, Dict

from celery import Celery
from celery.signals import setup_logging, worker_init
from celery.utils.log import get_task_logger

app = Celery("celery_proj", broker=os.environ.get("BROKER", "redis://127.0.0.1:6379/0"), backend=None)
app.conf.worker_hijack_root_logger = False
WITHOUT_WRAPPER = os.environ.get("CELERY_FORKLOG") == "worker_init"


def _config() -> Dict[str, Any]:
    handler: Dict[str, Any] = {
        "class": "logging.handlers.RotatingFileHandler",
        "filename": os.environ.get("TASK_LOG", "tasks.log"),
        "maxBytes": 65536,
        "backupCount": 100,
        "formatter": "plain",
    }
    if WITHOUT_WRAPPER:
        handler = {"class": "forklog.Handler"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": "%(process)d %(levelname)s %(name)s %(message)s"}},
        "handlers": {"file": handler},
        "root": {"level": "INFO", "handlers": ["file"]},
    }


def start_hub(**_kwargs: Any) -> None:
    from forklog.run import start_hub as start

    start()


if WITHOUT_WRAPPER:
    worker_init.connect(start_hub)


@setup_logging.connect
def configure(**_kwargs: Any) -> None:
    logging.config.dictConfig(_config())


log = get_task_logger(__name__)


@app.task
def work(number: int, records: int) -> int:
    for i in range(records):
        log.info("task %d record %d pid %d", number, i, os.getpid())
    try:
        raise ValueError(f"task {number} failed")
    except ValueError:
        log.exception("task %d traceback", number)
    return number


@app.task
def slow(records: int) -> int:
    """Logs for a while (a child is SIGKILLed in the middle of it)."""
    for i in range(records):
        log.info("slow record %d pid %d", i, os.getpid())
        time.sleep(0.01)
    return records
