"""The views the adoption tests drive."""

from __future__ import annotations

import logging

from django.http import HttpRequest, HttpResponse
from django.urls import path

log = logging.getLogger("shop.orders")


def logs(request: HttpRequest) -> HttpResponse:
    """Log INFO, DEBUG (filtered out by LOGGING), a WARNING and an exception, tagged with the id."""
    rid = request.GET.get("id", "")
    log.info("order placed id=%s", rid)
    log.debug("debug detail id=%s", rid)
    log.warning("stock low id=%s", rid)
    try:
        raise KeyError(f"missing-{rid}")
    except KeyError:
        log.exception("lookup failed id=%s", rid)
    return HttpResponse("ok")


def boom(request: HttpRequest) -> HttpResponse:
    """An unhandled error: Django logs it on django.request with its traceback, and answers 500."""
    raise ValueError(f"boom-{request.GET.get('id', '')}")


def health(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok")


urlpatterns = [path("log", logs), path("boom", boom), path("health", health)]
