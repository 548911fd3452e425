"""A Django project's settings as a production deployment writes them: LOGGING with a shared rotating file."""

from __future__ import annotations

import os
from typing import Any, Dict, List

SECRET_KEY = "forklog-tests-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "tests.apps.djsite.urls"
INSTALLED_APPS: List[str] = []
MIDDLEWARE: List[str] = []
DATABASES: Dict[str, Any] = {}
USE_TZ = True

LOG_FILE = os.environ.get("DJANGO_LOG_FILE", "django.log")

# Django's documented production pattern: one rotating file named by the root
# logger and by "django" (which does not propagate), a console for warnings,
# and mail to the admins on errors (none configured here: it sends nothing).
LOGGING: Dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "verbose": {
            "format": "{asctime} {levelname} {name} {process:d} {message}",
            "style": "{",
        },
    },
    "filters": {
        "require_debug_false": {"()": "django.utils.log.RequireDebugFalse"},
    },
    "handlers": {
        "file": {
            "level": "INFO",
            "class": "logging.handlers.RotatingFileHandler",
            "filename": LOG_FILE,
            "maxBytes": 64 * 1024,
            "backupCount": 200,
            "formatter": "verbose",
        },
        "console": {"level": "WARNING", "class": "logging.StreamHandler", "formatter": "verbose"},
        "mail_admins": {
            "level": "ERROR",
            "filters": ["require_debug_false"],
            "class": "django.utils.log.AdminEmailHandler",
        },
    },
    "root": {"handlers": ["file", "console"], "level": "INFO"},
    "loggers": {
        "django": {"handlers": ["file", "mail_admins"], "level": "INFO", "propagate": False},
    },
}
