"""Fixtures for the tests that start real gunicorn masters."""

from __future__ import annotations

from typing import Iterator, List

import pytest

from tests.integration.gunicorn_proc import Gunicorn


@pytest.fixture
def servers() -> Iterator[List[Gunicorn]]:
    """gunicorns a test started; their whole process groups are killed afterwards."""
    started: List[Gunicorn] = []
    yield started
    for server in started:
        server.kill_group()
