"""The demo app, recording in a file per process what its log calls sent (for the chaos test).

``COUNTS_DIR`` names a directory; each process writes two files there, named
by its pid, that survive a SIGKILL:

* ``<pid>.calls``: one entry per call of the hub's handler, appended as the
  call *starts*: the record's identity, the CRC32 and the length of its
  message (UTF-8), as the log file will show it. A call under way when the
  process was killed has its entry, and may or may not have sent its record.
* ``<pid>``: written after every call, once it has returned: how many records
  the process has numbered (``Channel._seq``; a dropped record takes a number
  too), how many it dropped and has not reported yet (the pending drop
  summary), and how many calls have returned. The first 8 bytes are the
  number of records numbered, as before.

So a process's calls are whole or under way: ``len(calls) == returned``
when it was not inside a log call, ``returned + 1`` when it was. Load the
app with ``--preload``: the wrapper then runs in each worker from its first
record on ("Booting worker", logged before gunicorn loads the app in a
worker), and every record the worker numbers is one of its calls.
"""

from __future__ import annotations

import logging
import os
from typing import Dict

import app as demo

from forklog._worker.handler import ForkHandler
from tests.apps.counts import CALL, STATE, identity

_emit = ForkHandler.emit


class _Process:
    """This process's two files, and its count of returned calls."""

    def __init__(self, pid: int) -> None:
        directory = os.environ["COUNTS_DIR"]
        path = os.path.join(directory, str(pid))
        # The state file appears whole or not at all: a SIGKILL between creating
        # it and writing it must not leave an empty file that reads as 0 sent.
        fd = os.open(f"{path}.new", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.pwrite(fd, STATE.pack(0, 0, 0), 0)
        os.rename(f"{path}.new", path)
        self.state = fd
        self.calls = os.open(f"{path}.calls", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        self.returned = 0


_processes: Dict[int, _Process] = {}


def _counting_emit(self: ForkHandler, record: logging.LogRecord) -> None:
    pid = os.getpid()
    process = _processes.get(pid)
    if process is None:
        process = _processes[pid] = _Process(pid)
    try:
        message = record.getMessage()
    except Exception:  # the handler counts such a record as dropped; no line shows it
        message = ""
    # One write() of 8 bytes to a file opened O_APPEND: whole or not at all.
    os.write(process.calls, CALL.pack(*identity(message)))
    _emit(self, record)
    # The records this process has numbered so far: itertools.count's repr is "count(N)".
    numbered = int(repr(self.queue._seq)[len("count(") : -1])
    unreported = sum(self.queue.dropped.values())
    process.returned += 1
    os.pwrite(process.state, STATE.pack(numbered, unreported, process.returned), 0)


# The whole process's hub handler: import this module only in the gunicorn under test
# (the tests read the files through tests/apps/counts.py).
ForkHandler.emit = _counting_emit  # type: ignore[method-assign]

app = demo.app
