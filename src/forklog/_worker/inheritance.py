"""How a channel reaches a child process: inherited by ``fork()``, pickled for spawn and forkserver.

* **fork** (gunicorn, the ``fork`` start method, a raw ``os.fork()``): the
  owner reserves a scoreboard slot for the child before the fork; in the
  child every live channel starts its counters afresh, takes that slot and
  closes the read end, which is the master's alone (DESIGN H6).
* **spawn, forkserver**: like ``multiprocessing.connection.Connection``, the
  write end (and the scoreboard) is duplicated into the child being created
  and the channel rebuilt there with the same drop policy (H12).
"""

from __future__ import annotations

import logging
import pickle
import threading
import weakref
from multiprocessing import reduction
from typing import TYPE_CHECKING, Any, Callable, Dict, Tuple, Type

from forklog import _fork
from forklog._wire.scoreboard import Scoreboard

if TYPE_CHECKING:
    from forklog._worker.channel import Channel

__all__ = ["reduce", "register"]

_live_channels: weakref.WeakSet[Channel] = weakref.WeakSet()

# Scoreboard slots reserved by the owner for the child being forked, handed
# over in the child. Thread-local: the child continues the forking thread.
_forking = threading.local()


def register(channel: Channel) -> None:
    """Have ``channel`` follow this process's forks."""
    _live_channels.add(channel)
    # On first use, not at import: importing forklog has no side effects.
    _fork.on_fork(
        before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child
    )


def _before_fork() -> None:
    _forking.slots = {id(ch): ch._reserve_slot() for ch in list(_live_channels)}


def _after_fork_in_parent() -> None:
    _forking.slots = {}


def _after_fork_in_child() -> None:
    slots = getattr(_forking, "slots", {})
    _forking.slots = {}
    for channel in list(_live_channels):
        channel._after_fork(slots.get(id(channel), -1))


def reduce(channel: Channel) -> Tuple[Callable[..., Channel], Tuple[Any, ...]]:
    """``channel.__reduce__``: its descriptors duplicated into the child being created."""
    slot = channel._reserve_slot()
    board = channel.scoreboard
    board_dup = reduction.DupFd(board.fd) if slot >= 0 and board is not None else None
    options = {
        "keep_level": channel.keep_level,
        "keep_wait": channel.keep_wait,
        "max_record_bytes": channel.max_record_bytes,
        "level": channel.level,
        "line_formatters": _picklable(channel.line_formatters),
        "fields_with_lines": channel.fields_with_lines,
        "owner_uid": channel.owner_uid,
    }
    return (_rebuild, (type(channel), reduction.DupFd(channel.write_fd), board_dup, slot, options))


def _picklable(line_formatters: Tuple[logging.Formatter, ...]) -> Tuple[logging.Formatter, ...]:
    """``line_formatters`` if a spawned child can have them, else none (it sends fields)."""
    try:
        pickle.dumps(line_formatters)
    except Exception:  # noqa: BLE001 - a formatter with a lambda converter, say
        return ()
    return line_formatters


def _rebuild(kind: Type[Channel], dup: Any, board: Any, slot: int, options: Dict[str, Any]) -> Channel:
    scoreboard = Scoreboard(fd=board.detach()) if board is not None else None
    return kind._attach(dup.detach(), scoreboard, slot if board is not None else -1, **options)
