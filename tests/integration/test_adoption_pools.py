"""Adoption in pool children: ``basicConfig(filename=...)`` in a child writes through the parent's hub."""

from __future__ import annotations

import logging
import multiprocessing
import os
import re
from collections import Counter
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

import forklog
from tests.support import Collect

JOBS = 40
PER_JOB = 50


def job(args: Tuple[str, int]) -> int:
    """Configure logging as a script does (basicConfig to a file), then log."""
    path, index = args
    logging.basicConfig(filename=path, format="%(process)d %(levelname)s %(message)s", level=logging.INFO)
    log = logging.getLogger("job")
    for i in range(PER_JOB):
        log.info("job=%d i=%d", index, i)
    log.debug("job=%d hidden", index)  # below the level basicConfig set
    return os.getpid()


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_basicconfig_in_a_pool_child_is_one_file_written_by_the_parent(tmp_path: Path, method: str) -> None:
    """Each child's basicConfig(filename=...) is adopted: one file, every line once, in order."""
    path = tmp_path / "jobs.log"
    collect = Collect()
    with forklog.Hub([collect]) as hub:
        ctx = multiprocessing.get_context(method)
        with ctx.Pool(3, initializer=forklog.init_worker, initargs=(hub.queue,)) as pool:
            pids = set(pool.map(job, [(str(path), k) for k in range(JOBS)], chunksize=1))
            pool.close()
            pool.join()
        stats = hub.stop()
    assert stats is not None
    assert stats.written[str(path)] == JOBS * PER_JOB
    line = re.compile(r"^(?P<pid>\d+) INFO job=(?P<job>\d+) i=(?P<i>\d+)$")
    matches = [line.match(text) for text in path.read_text().splitlines()]
    assert all(matches), "a line not of basicConfig's format (torn, or foreign)"
    seen = Counter((int(m["job"]), int(m["i"])) for m in matches if m)
    assert seen == Counter({(k, i): 1 for k in range(JOBS) for i in range(PER_JOB)})
    order: Dict[str, List[Tuple[int, int]]] = {}
    for m in matches:
        assert m is not None
        order.setdefault(m["pid"], []).append((int(m["job"]), int(m["i"])))
    assert all(keys == sorted(keys) for keys in order.values()), "out of order within a process"
    assert {int(pid) for pid in order} == pids
    assert not [r for r in collect.records if r.name == "job"], (
        "the job's records reached the hub's own sinks too"
    )
