"""The demo app, counting in a file per process every record its log calls sent (for the chaos test).

``COUNTS_DIR`` names a directory; each process writes there, after every
record the hub's handler took, how many it has taken: the count survives a
SIGKILL, short by at most the record whose call was interrupted.
"""

from __future__ import annotations

import logging
import os
import struct
from typing import Dict

import app as demo

from forklog._worker.handler import ForkHandler

_COUNT = struct.Struct("<Q")
_files: Dict[int, int] = {}
_emit = ForkHandler.emit


def _counting_emit(self: ForkHandler, record: logging.LogRecord) -> None:
    _emit(self, record)
    pid = os.getpid()
    fd = _files.get(pid)
    if fd is None:
        fd = _files[pid] = os.open(os.path.join(os.environ["COUNTS_DIR"], str(pid)), os.O_WRONLY | os.O_CREAT)
    # The records this process has numbered so far ("Booting worker" and the like, logged
    # before this module was imported, included): itertools.count's repr is "count(N)".
    numbered = int(repr(self.queue._seq)[len("count(") : -1])
    os.pwrite(fd, _COUNT.pack(numbered), 0)


ForkHandler.emit = _counting_emit  # type: ignore[method-assign]

app = demo.app
