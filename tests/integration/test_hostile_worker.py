"""A compromised worker under a real gunicorn (root master, ``nobody`` workers) cannot hurt the master.

The config is ``from forklog.gunicorn import *`` and nothing else; the
attacks are request handlers (tests/apps/hostile_app.py). After each one
the other worker's next record is written within a second, and gunicorn's
master goes on and exits 0 at the end.
"""

from __future__ import annotations

import concurrent.futures
import os
from pathlib import Path
from typing import Callable, Dict, Optional

import pytest

from tests.apps.hostile_app import ATTACKS
from tests.integration.gunicorn_proc import Gunicorn, wait_for

#: The interpreter may live where nobody can read it (under /root): what gunicorn's worker
#: imports lazily at its start is imported by the master, as root (see test_adoption.py).
CONF = "from forklog.gunicorn import *  # noqa: F403\nimport hashlib\nimport random\n\nrandom.seed()\n"


def root_gunicorn(tmp_path: Path, app: str, health: str, env: Optional[Dict[str, str]] = None) -> Gunicorn:
    """gunicorn as the issue tried it: a root master, ``-w 2 --user nobody --group nogroup --preload``."""
    assert os.geteuid() == 0, "starts gunicorn with --user nobody: run the tests as root"
    conf = tmp_path / "conf.py"
    conf.write_text(CONF)
    return Gunicorn(
        tmp_path,
        ["-w", "2", "--user", "nobody", "--group", "nogroup", "--preload"],
        conf=conf,
        app=app,
        health=health,
        env=env,
    )


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_a_worker_attacking_the_master_leaves_it_serving_and_logging(tmp_path: Path, attack: str) -> None:
    """Issue 21, items 2, 3 and 4 under gunicorn: the stop token, a time out of range, a cut scoreboard."""
    server = root_gunicorn(tmp_path, "tests.apps.hostile_app:app", "/mark?ready")
    try:
        server.start()
        peak = master_peak(server)
        attacker = server.served_by(attack)  # 0: a worker that ends itself answers nothing
        another_worker_is_heard(server, attacker, f"after the attack {attack}")
        grown = master_peak(server) - peak
        assert grown < 16 << 20, f"the master's peak RSS grew by {grown >> 20} MiB"
        assert server.alive(), "gunicorn's master is gone"
        assert server.stop() == 0
    finally:
        server.kill_group()
    stderr = server.stderr()
    assert "Unhandled exception in main loop" not in stderr, stderr[-2000:]
    assert "Exception in thread forklog" not in stderr, stderr[-2000:]


def another_worker_is_heard(
    server: Gunicorn, attacker: int, what: str, seen: Optional[Callable[[str], bool]] = None
) -> None:
    """A record of a worker other than ``attacker``, logged after the attack, is written within a second.

    With two workers either may take a request, and one can take them all
    in turn: two marks go out at once, each holding its worker a moment, so
    the two workers serve one each. The other worker's record must then be
    written (``seen(mark_id)``; by default, in the hub's file).
    """

    def in_the_file(mark_id: str) -> bool:
        return f"mark id={mark_id}" in server.log_file.read_text(errors="replace")

    for k in range(10):
        ids = [f"other-{k}-{n}" for n in range(2)]
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            served = list(pool.map(lambda mark_id: server.served_by(f"/mark?id={mark_id}&hold=0.3"), ids))
        assert all(served), f"no answer {what}"
        others = [mark_id for mark_id, pid in zip(ids, served, strict=True) if pid != attacker]
        if others:
            wait_for(lambda: (seen or in_the_file)(others[0]), 1.0, f"the other worker's record {what}")  # noqa: B023
            return
    raise AssertionError(f"every request went to the attacking worker {attacker}")


def master_peak(server: Gunicorn) -> int:
    """The master's peak resident size so far (``VmHWM``), in bytes."""
    with open(f"/proc/{server.pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/<pid>/status")
