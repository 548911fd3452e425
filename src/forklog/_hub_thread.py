"""Which threads are the hub's own, known on both sides of the wire.

A record logged on one of the hub's threads (receiver, listener, a sink's
thread, gzip), by a sink whose ``emit`` logs, must not go back into the hub,
where it would reach that sink again, without end (DESIGN H26). The master's
threads mark themselves (:func:`forklog._master.scheduling.background`); the
emitting side's channel asks (:meth:`forklog._worker.channel.Channel.send_record`).
"""

from __future__ import annotations

import threading

__all__ = ["mark", "on_hub_thread"]


class _HubThread(threading.local):
    hub = False


_local = _HubThread()


def on_hub_thread() -> bool:
    """Whether the calling thread is one of the hub's own."""
    return _local.hub


def mark() -> None:
    """Mark the calling thread as one of the hub's own."""
    _local.hub = True
