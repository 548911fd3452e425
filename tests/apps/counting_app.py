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
    # The records this process has numbered so far ("Booting worker" and the like, logged
    # before this module was imported, included): itertools.count's repr is "count(N)".
    numbered = int(repr(self.queue._seq)[len("count(") : -1])
    pid = os.getpid()
    fd = _files.get(pid)
    if fd is not None:
        os.pwrite(fd, _COUNT.pack(numbered), 0)
        return
    # The first count appears whole or not at all: a SIGKILL between creating the
    # file and writing it must not leave an empty file that reads as 0 sent.
    path = os.path.join(os.environ["COUNTS_DIR"], str(pid))
    fd = os.open(f"{path}.new", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.pwrite(fd, _COUNT.pack(numbered), 0)
    os.rename(f"{path}.new", path)
    _files[pid] = fd


ForkHandler.emit = _counting_emit  # type: ignore[method-assign]

app = demo.app
