"""forklog.testing: the helper users' own tests run a hub with."""

from __future__ import annotations

import logging
import multiprocessing
from typing import List

import pytest

import forklog
import forklog.testing


class Unpicklable:
    def __reduce__(self) -> str:
        raise TypeError("no pickling")

    def __repr__(self) -> str:
        return "<Unpicklable>"


def job(n: int) -> int:
    logging.getLogger("jobs").info("job %d in a child", n)
    return n


def test_records_are_the_ones_that_crossed_the_hub() -> None:
    """A test sees what the sinks would get: merged messages, extras after the trip."""
    with forklog.testing.capture() as logs:
        log = logging.getLogger("shop")
        log.info("order %d paid", 42, extra={"order_id": 42, "socket": Unpicklable()})
        log.debug("details")
        try:
            raise KeyError("sku")
        except KeyError:
            log.exception("lookup failed")
    assert logs.messages(level="INFO") == ["order 42 paid"]
    assert logs.messages(logger="shop") == ["order 42 paid", "details", "lookup failed"]
    paid = logs.assert_logged("paid", level=logging.INFO)
    assert paid.__dict__["order_id"] == 42 and paid.__dict__["socket"] == "<Unpicklable>"
    failed = logs.assert_logged("lookup failed")
    assert failed.exc_text is not None and "KeyError: 'sku'" in failed.exc_text
    assert logs.stats is not None and logs.stats.enqueued == 3


def test_assert_logged_says_what_was_there() -> None:
    """A missing record fails with the list of what did arrive."""
    with forklog.testing.capture("quiet") as logs:
        logging.getLogger("quiet").warning("something else")
    with pytest.raises(AssertionError, match="something else"):
        logs.assert_logged("expected text")


def test_children_log_into_the_capture() -> None:
    """Pool children started with init_worker(logs.queue) log into the same capture."""
    context = multiprocessing.get_context("spawn")
    with forklog.testing.capture() as logs:
        with context.Pool(2, forklog.init_worker, (logs.queue,)) as pool:
            assert pool.map(job, range(6)) == list(range(6))
        logs.wait_for(6, timeout=30)
    messages: List[str] = sorted(logs.messages(logger="jobs"))
    assert messages == [f"job {n} in a child" for n in range(6)]


def test_the_logger_is_restored() -> None:
    """After the block the logger has its handlers and level back."""
    logger = logging.getLogger("restored")
    logger.setLevel(logging.ERROR)
    before = list(logger.handlers)
    with forklog.testing.capture(logger, level="DEBUG"):
        assert logger.level == logging.DEBUG
    assert logger.handlers == before and logger.level == logging.ERROR
