"""The bounded FIFO between the master's two threads, and the kinds of what it holds.

The receiver (:mod:`forklog._master.receiver`) appends whole records; the
listener (:mod:`forklog._master.listener`) takes them in batches. When the
backlog is full the receiver stops reading, the pipe fills, and the
writers' drop policy takes over: memory stays bounded by ``queue_size``
records (and ``max_backlog_bytes``) plus the pipe.
"""

from __future__ import annotations

import collections
import threading
from typing import Callable, Deque, Dict, Final, List, Optional, Tuple

from forklog import _bounded

__all__ = ["DROPS", "EXITED", "RECORD", "Backlog", "Item"]

#: kind, pid, boot, seq, payload. A record's kind is its frame's flags (the
#: receiver queues FrameReader's tuples as they are), or RECORD.
Item = Tuple[int, int, int, int, bytes]
RECORD = 0
#: An item's payload, the place the size bound counts.
PAYLOAD: Final = 4
#: Not a frame's flags: the process is gone and all it wrote is ahead of this item.
EXITED = 0x100
#: Not a frame's flags: a writer's drop counts (a control frame), in order with its records.
DROPS = 0x200


class Backlog:
    """A bounded FIFO of encoded records between the two scheduling."""

    def __init__(self, max_records: int, max_bytes: int) -> None:
        self.max_records = max_records
        self.max_bytes = max_bytes
        self._items: Deque[Item] = collections.deque()
        self._bytes = 0
        self._cond = threading.Condition(threading.Lock())
        self.closed = False
        #: Records the listener took in its last batch and has not finished
        #: handing to the sinks (see :meth:`depth`).
        self.in_hand = 0
        #: Records dropped by :meth:`clear`, by pid.
        self.cleared: Dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._items)

    def put_many(self, items: List[Item], deadline: Optional[Callable[[], bool]] = None) -> bool:
        """Append ``items`` in order, waiting while full; False if ``deadline()`` says give up."""
        queue = self._items
        with self._cond:
            size = sum([len(item[PAYLOAD]) for item in items])
            if len(queue) + len(items) <= self.max_records and self._bytes + size <= self.max_bytes:
                queue.extend(items)  # the common case: room for all of them
                self._bytes += size
                self._cond.notify_all()
                return True
            for item in items:
                size = len(item[PAYLOAD])
                while queue and (len(queue) >= self.max_records or self._bytes + size > self.max_bytes):
                    self._cond.notify_all()
                    if deadline is not None and deadline():
                        return False
                    self._cond.wait(0.05)
                queue.append(item)
                self._bytes += size
            self._cond.notify_all()
        return True

    def get_batch(self, limit: int, timeout: float) -> List[Item]:
        with self._cond:
            if not self._items and not self.closed:
                self._cond.wait(timeout)
            items = self._items
            if len(items) <= limit:
                batch = list(items)
                items.clear()
            else:
                popleft = items.popleft
                batch = [popleft() for _ in range(limit)]
            self._bytes -= sum([len(item[PAYLOAD]) for item in batch])
            self.in_hand = len(batch)
            if batch:
                self._cond.notify_all()
            return batch

    def done(self) -> None:
        """The listener has handed its batch to the sinks."""
        self.in_hand = 0

    def depth(self) -> int:
        """Records between the pipe and the sinks: queued, and in the listener's hands."""
        return len(self._items) + self.in_hand

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def clear(self) -> int:
        """Drop every item held (a stop past its deadline); how many, by pid in ``cleared``."""
        with self._cond:
            count = len(self._items)
            for kind, pid, *_rest in self._items:
                if kind == RECORD:
                    _bounded.add(self.cleared, pid, 1, _bounded.by_pid)
            self._items.clear()
            self._bytes = 0
            self._cond.notify_all()
            return count
