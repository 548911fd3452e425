"""The same project with no LOGGING: Django's defaults (a debug-only console, mail to the admins)."""

from __future__ import annotations

from tests.apps.djsite.settings import (  # noqa: F401 - the settings Django reads
    ALLOWED_HOSTS,
    DATABASES,
    DEBUG,
    INSTALLED_APPS,
    MIDDLEWARE,
    ROOT_URLCONF,
    SECRET_KEY,
    USE_TZ,
)
