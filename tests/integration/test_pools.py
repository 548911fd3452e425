"""``init_worker`` as a pool initializer, under every start method."""

from __future__ import annotations

import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable, Dict, List, Tuple

import pytest

import forklog
from tests.support import Collect

RECORDS = 150  # per task, one of them over 4 KiB, one with a traceback
TASKS = 12


def task(index: int) -> Tuple[int, int]:
    log = logging.getLogger("pool.task")
    for i in range(RECORDS):
        if i == 7:
            log.info("task=%d i=%d big=%s", index, i, "y" * 9000)
        elif i == 9:
            try:
                raise ValueError(f"bad value in task {index}")
            except ValueError:
                log.exception("task=%d i=%d failed", index, i)
        else:
            log.debug("task=%d i=%d", index, i)
    return index, os.getpid()


def check(collect: Collect, results: List[Tuple[int, int]], parent_pid: int) -> None:
    """Every record of every child once, in per-process order, tracebacks kept apart."""
    seen: Dict[Tuple[int, int], int] = {}
    order: Dict[int, List[Tuple[int, int]]] = {}
    for record in collect.records:
        if record.name != "pool.task":
            continue
        message = record.getMessage()
        fields = dict(part.split("=", 1) for part in message.split()[:2])
        key = (int(fields["task"]), int(fields["i"]))
        seen[key] = seen.get(key, 0) + 1
        order.setdefault(record.process or 0, []).append(key)
        if key[1] == 7:
            assert message.endswith("y" * 9000)
        if key[1] == 9:
            assert record.exc_text and f"ValueError: bad value in task {key[0]}" in record.exc_text
            assert "Traceback" not in message
    assert seen == {(t, i): 1 for t in range(TASKS) for i in range(RECORDS)}
    for pid, keys in order.items():
        assert keys == sorted(keys), f"pid {pid}: out of order"
    child_pids = {pid for _index, pid in results}
    assert set(order) == child_pids and parent_pid not in child_pids
    assert any(r.name == "pool.parent" for r in collect.records), "the parent's own record"


def run_pool(ctx: Any, queue: forklog.Channel) -> List[Tuple[int, int]]:
    with ctx.Pool(3, initializer=forklog.init_worker, initargs=(queue,)) as pool:
        results: List[Tuple[int, int]] = pool.map(task, range(TASKS), chunksize=1)
        pool.close()
        pool.join()
    return results


def run_executor(ctx: Any, queue: forklog.Channel) -> List[Tuple[int, int]]:
    with ProcessPoolExecutor(3, mp_context=ctx, initializer=forklog.init_worker, initargs=(queue,)) as ex:
        return list(ex.map(task, range(TASKS)))


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
@pytest.mark.parametrize("run", [run_pool, run_executor], ids=["Pool", "ProcessPoolExecutor"])
def test_pool_initializer(method: str, run: Callable[[Any, forklog.Channel], List[Tuple[int, int]]]) -> None:
    """Pool and ProcessPoolExecutor, initializer=forklog.init_worker: every record of every child arrives."""
    collect = Collect()
    with forklog.Hub([collect]) as hub:
        forklog.init_worker(hub.queue)
        # H1: the parent logs before the children exist.
        logging.getLogger("pool.parent").info("before the pool")
        results = run(multiprocessing.get_context(method), hub.queue)
    check(collect, results, os.getpid())
