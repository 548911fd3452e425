"""The threat model's claims, checked: nothing outside the process tree can feed the hub."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import stat
from pathlib import Path
from typing import Dict

import forklog
from forklog import _wire as wire
from forklog._wire import framing as _frame
from forklog._wire.packing import pack_fields
from tests.support import Collect


def open_fds() -> Dict[int, str]:
    fds: Dict[int, str] = {}
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the descriptor listdir itself used
            fds[int(name)] = os.readlink(f"/proc/self/fd/{name}")
    return fds


def test_the_hub_listens_on_nothing_anyone_can_open() -> None:
    """A running hub holds only anonymous pipes, memory files and an unnamed socket pair: no path, no address.

    The socket pair is where writers register their pipes (issue 21, item 7): bound to no
    address, so only a process that inherited its end (a child) can reach it.
    """
    before = open_fds()
    with forklog.Hub([Collect()]) as hub:
        opened = {fd: target for fd, target in open_fds().items() if fd not in before}
        assert hub.queue.read_fd in opened and hub.queue.write_fd in opened
        for fd, target in opened.items():
            # An unlinked file for the scoreboard where memfd is not used (FORKLOG_PORTABLE, macOS).
            unlinked = "forklog-scoreboard-" in target and target.endswith(" (deleted)")
            if stat.S_ISSOCK(os.fstat(fd).st_mode):
                sock = socket.socket(fileno=os.dup(fd))
                try:
                    assert sock.family == socket.AF_UNIX and sock.getsockname() in ("", b""), sock
                    registrations = hub.queue.registrations
                    assert registrations is not None and fd in (hub.queue.register_fd, registrations.fileno())
                finally:
                    sock.close()
                continue
            assert target.startswith(("pipe:[", "/memfd:")) or unlinked, f"fd {fd} -> {target}"


def test_a_payload_carrying_code_is_only_data(tmp_path: Path) -> None:
    """A code object in a record's extra fields is refused, never built, never run; the hub goes on."""
    marker = tmp_path / "ran"
    code = compile(f"open({str(marker)!r}, 'w').close()", "<evil>", "exec")
    collect = Collect()
    with forklog.Hub([collect]) as hub:
        fields = list(wire.decode_fields(wire.encode(forklog_record("plain"))))
        fields[wire.Field.EXTRAS] = {"evil": code}
        for frame in _frame.frames(0, os.getpid(), 1, 1, pack_fields(tuple(fields))):
            os.write(hub.queue.write_fd, frame)
        hub.handler().handle(forklog_record("after"))
        stats = hub.stop(timeout=10)
    assert stats is not None and stats.bad_records == 1
    assert not marker.exists()
    assert collect.records[-1].getMessage() == "after", "the hub went on"


def forklog_record(message: str) -> logging.LogRecord:
    return logging.LogRecord("sec", logging.INFO, __file__, 1, message, (), None)
