"""Request context through a real gunicorn: bound in pre_request and in a WSGI middleware."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path
from typing import Dict, List

from tests.integration.gunicorn_proc import REPO, Gunicorn
from tests.integration.test_gunicorn import start

CONFIG = f"""
import forklog

exec(open({str(REPO / "gunicorn_conf.py")!r}).read())


def pre_request(worker, req):
    forklog.bind(client=dict(req.headers).get("X-CLIENT", "-"))


def post_request(worker, req, environ, resp):
    forklog.unbind("client")
"""

BURST = re.compile(r"burst id=(\S+) ")


def test_every_record_of_a_request_carries_its_ids(servers: List[Gunicorn], tmp_path: Path) -> None:
    """gthread workers, concurrent requests: each record carries its own request's bound fields."""
    conf = tmp_path / "context_conf.py"
    conf.write_text(CONFIG)
    server = start(
        servers,
        tmp_path,
        "-w",
        "2",
        "-k",
        "gthread",
        "--threads",
        "4",
        conf=conf,
        env={"FORKLOG_FORMAT": "json"},
    )
    statuses: Dict[str, int] = {}
    lock = threading.Lock()

    def client(n: int) -> None:
        for k in range(25):
            rid = f"c{n}-{k}"
            status = server.get(
                f"/burst?n=6&big=0&id={rid}", headers={"X-Request-Id": rid, "X-Client": f"client{n}"}
            )
            with lock:
                statuses[rid] = status

    threads = [threading.Thread(target=client, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert server.get("/health", headers={"X-Request-Id": "last"}) == 200
    assert server.stop() == 0
    assert set(statuses.values()) == {200} and len(statuses) == 150
    records = [json.loads(line) for line in server.log_lines()]
    bursts = [r for r in records if BURST.match(r["message"])]
    assert len(bursts) == 150 * 6
    for record in bursts:
        rid = BURST.match(record["message"]).group(1)  # type: ignore[union-attr]
        assert record["request_id"] == rid, record
        assert record["client"] == "client" + rid[1 : rid.index("-")], record
    # Nothing leaks into records outside a request (the master's, a worker's boot lines).
    outside = [r for r in records if r["logger"] == "gunicorn.error"]
    assert outside and not any("request_id" in r or "client" in r for r in outside)
