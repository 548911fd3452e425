"""Issue 21, item 5: a worker's payload costs the master memory and time in proportion to its bytes.

``marshal.loads`` allocated what a container's header announced: five bytes
announcing 2^27 items made the master allocate 1 GiB, a list of 2^31-1 items
cost seconds of CPU holding the GIL. A real hub, a forked child sending the
bytes; the master's peak memory is measured from a reset (``clear_refs``).
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import List

import pytest

import forklog
from forklog import _wire as wire
from forklog._wire.lines import LINES, LINES_HEAD
from forklog._wire.packing import _HEAD
from tests.support import Collect, a_bystander_is_heard, in_child

#: Five bytes each, announcing far more than they hold.
ANNOUNCED = {
    "tuple of 2^27 items": b"(" + (1 << 27).to_bytes(4, "little"),
    "list of 2^31-1 items": b"[" + (2**31 - 1).to_bytes(4, "little"),
    "number of 2^31-1 digits": b"l" + (2**31 - 1).to_bytes(4, "little"),
    "set of 2^31-1 items": b"<" + (2**31 - 1).to_bytes(4, "little"),
}


def fields_payload(extras: bytes = b"", exception: bytes = b"") -> bytes:
    """An honest record's payload, its extras or its exception replaced by ``extras`` or ``exception``."""
    payload = wire.encode(logging.LogRecord("hostile", logging.INFO, __file__, 1, "payload", (), None))
    head = list(_HEAD.unpack_from(payload))
    assert head[-2:] == [0, 0]  # no exception, no extras
    head[-2:] = [len(exception), len(extras)]
    return _HEAD.pack(*head) + exception + extras + payload[_HEAD.size :]


def lines_payload(chain: bytes) -> bytes:
    """A lines payload whose traceback chain is ``chain``."""
    name, line = b"hostile", b"a line with a traceback"
    return (
        LINES_HEAD.pack(LINES, 1, logging.ERROR, time.time(), len(name), len(chain), 0) + name + line + chain
    )


def peak_rss() -> int:
    """This process's peak resident memory since the last reset, in bytes."""
    with open("/proc/self/status") as status:
        match = re.search(r"VmHWM:\s+(\d+) kB", status.read())
    assert match is not None
    return int(match.group(1)) << 10


def reset_peak_rss() -> None:
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")


@pytest.mark.parametrize("announced", list(ANNOUNCED), ids=list(ANNOUNCED))
@pytest.mark.parametrize("place", ["extras", "exception", "traceback"])
def test_announced_sizes_cost_nothing(tmp_path: Path, announced: str, place: str) -> None:
    """A count or a length past the payload's bytes: refused before any allocation, the hub goes on."""
    bytes_ = ANNOUNCED[announced]
    log_file = tmp_path / "app.log"
    if place == "traceback":  # a file sink alone: the workers make the lines, tracebacks as chains
        sinks: List[logging.Handler] = [forklog.RotatingFileSink(str(log_file))]
        payload = lines_payload(bytes_)

        def arrived(text: str) -> bool:
            return log_file.exists() and text in log_file.read_text()
    else:
        collect = Collect()
        sinks = [collect]
        payload = fields_payload(**{place: bytes_})

        def arrived(text: str) -> bool:
            return text in collect.messages()

    with forklog.Hub(sinks) as hub:
        reset_peak_rss()
        before = peak_rss()

        def attack() -> None:
            forklog.init_worker(hub.queue)
            for _ in range(3):
                assert hub.queue._send(payload, logging.INFO)
            assert hub.queue.flush(1.0)

        in_child(attack)
        a_bystander_is_heard(hub, arrived)
        grown = peak_rss() - before
        stats = hub.stop(timeout=10)
    assert stats is not None and stats.bad_records == 3 and stats.listener_faults == 0
    assert grown < 16 << 20, f"the master's peak memory grew by {grown >> 20} MiB"
