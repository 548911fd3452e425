"""Test-wide fixtures."""

from __future__ import annotations

import logging
from typing import Iterator

import pytest


@pytest.fixture(autouse=True)
def restore_root_logger() -> Iterator[None]:
    """Tests that call init_worker in the test process get the root logger back as it was."""
    from forklog._worker import adoption, fallback

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    fallback.reset()  # what an earlier test configured is not this one's application
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    for handler in handlers:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(level)
    # init_worker attached this process to a hub: later tests' handlers are their own.
    adoption.detach()
    fallback.reset()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A skipped test fails the run: CI must not accept a test that did not run."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        return
    skipped = reporter.stats.get("skipped", [])
    if skipped and exitstatus == pytest.ExitCode.OK:
        names = ", ".join(report.nodeid for report in skipped[:5])
        reporter.write_line(f"forklog: {len(skipped)} skipped tests fail the run: {names}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
