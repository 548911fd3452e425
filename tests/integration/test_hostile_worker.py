"""A compromised worker under a real gunicorn (root master, ``nobody`` workers) cannot hurt the master.

The config is ``from forklog.gunicorn import *`` and nothing else; the
attacks are request handlers (tests/apps/hostile_app.py). After each one
the other worker's next record is written within a second, and gunicorn's
master goes on and exits 0 at the end.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Optional

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
        server.get(attack)  # a worker that ends itself answers nothing
        for k in range(3):
            assert server.get(f"/mark?after-{k}") == 200

            def written(k: int = k) -> bool:
                return f"mark after-{k}" in server.log_file.read_text(errors="replace")

            wait_for(written, 1.0, f"record after-{k} after the attack {attack}")
        assert server.alive(), "gunicorn's master is gone"
        assert server.stop() == 0
    finally:
        server.kill_group()
    stderr = server.stderr()
    assert "Unhandled exception in main loop" not in stderr, stderr[-2000:]
    assert "Exception in thread forklog" not in stderr, stderr[-2000:]
