"""How a channel reaches a child process: inherited by ``fork()``, pickled for spawn and forkserver.

* **fork** (gunicorn, the ``fork`` start method, a raw ``os.fork()``): in
  the child every live channel closes the master's ends (DESIGN H6), starts
  its counters afresh and registers a pipe of its own
  (:mod:`forklog._wire.registration`).
* **spawn, forkserver**: like ``multiprocessing.connection.Connection``, the
  writers' end of the registration socket (and the owner's table) is
  duplicated into the child being created, and the channel rebuilt there
  with the same drop policy (H12), registering its own pipe.
"""

from __future__ import annotations

import logging
import pickle
import weakref
from multiprocessing import reduction
from typing import TYPE_CHECKING, Any, Callable, Dict, Tuple, Type

from forklog import _fork
from forklog._wire import framing
from forklog._wire.scoreboard import Scoreboard

if TYPE_CHECKING:
    from forklog._worker.channel import Channel

__all__ = ["policy", "reduce", "register"]

_live_channels: weakref.WeakSet[Channel] = weakref.WeakSet()


def register(channel: Channel) -> None:
    """Have ``channel`` follow this process's forks."""
    _live_channels.add(channel)
    # On first use, not at import: importing forklog has no side effects.
    _fork.on_fork(after_in_child=_after_fork_in_child)


def _after_fork_in_child() -> None:
    for channel in list(_live_channels):
        channel._after_fork()


def reduce(channel: Channel) -> Tuple[Callable[..., Channel], Tuple[Any, ...]]:
    """``channel.__reduce__``: its descriptors duplicated into the child being created."""
    board = channel.scoreboard
    board_dup = reduction.DupFd(board.fd) if board is not None else None
    return (_rebuild, (type(channel), reduction.DupFd(channel.register_fd), board_dup, policy(channel)))


def policy(channel: Channel) -> Dict[str, Any]:
    """What a channel attached elsewhere keeps of ``channel``: its drop policy, formatters and owner."""
    return {
        "keep_level": channel.keep_level,
        "keep_wait": channel.keep_wait,
        "max_record_bytes": channel.max_record_bytes,
        "level": channel.level,
        "line_formatters": _picklable(channel.line_formatters),
        "fields_with_lines": channel.fields_with_lines,
        "owner_uid": channel.owner_uid,
        "pipe_sizes": getattr(channel, "pipe_sizes", None) or framing.WRITER_PIPE_SIZES,
    }


def _picklable(line_formatters: Tuple[logging.Formatter, ...]) -> Tuple[logging.Formatter, ...]:
    """``line_formatters`` if a spawned child can have them, else none (it sends fields)."""
    try:
        pickle.dumps(line_formatters)
    except Exception:  # noqa: BLE001 - a formatter with a lambda converter, say
        return ()
    return line_formatters


def _rebuild(kind: Type[Channel], dup: Any, board: Any, options: Dict[str, Any]) -> Channel:
    scoreboard = Scoreboard(slots=1, fd=board.detach()) if board is not None else None
    return kind._attach(dup.detach(), scoreboard, **options)
