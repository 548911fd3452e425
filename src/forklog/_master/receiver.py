"""The receiver thread: drains the pipe into the backlog until it reads the stop marker.

A writer's exit is never a frame: any worker could send one, naming a live
sibling (issue 21, item 7). The owner's own threads ask for it
(:meth:`Receiver.request_exit`, from gunicorn's ``child_exit`` or the
listener's liveness round), and the receiver queues the exit behind every
byte the pipe held when it was asked: the dead process wrote nothing after.
"""

from __future__ import annotations

import os
import select
import threading
import time
from typing import List, Optional, Set, Tuple

from forklog._master import scheduling
from forklog._master.backlog import DROPS, EXITED, Backlog, Item
from forklog._master.counters import Counters
from forklog._master.frame_reader import FrameReader
from forklog._stderr import Reporter
from forklog._wire import framing
from forklog._worker.channel import Channel

__all__ = ["EXIT_MARK", "Receiver", "boots_of"]

#: The payload of an exit request: prefix + pid + its boots (see Receiver.request_exit).
EXIT_MARK = b"exit"


class Receiver(threading.Thread):
    """Drains the pipe into the backlog until it reads the stop marker."""

    def __init__(
        self,
        channel: Channel,
        backlog: Backlog,
        counters: Counters,
        reporter: Reporter,
    ) -> None:
        super().__init__(name="forklog-receiver", daemon=True)
        assert channel.read_fd is not None
        self._fd = channel.read_fd
        self._backlog = backlog
        self._counters = counters
        self._reporter = reporter
        #: Set by Hub.stop just before it sends the token: until then no frame stops the receiver.
        self.stop_token: Optional[bytes] = None
        #: The master enforces the workers' max_record_bytes too (issue 21, item 11).
        self.frames = FrameReader(max_record_bytes=channel.max_record_bytes)
        self.deadline: Optional[float] = None  # set by Hub.stop
        self.abandoned_bytes = 0
        #: Writers of another wire version named so far in the current TELL_WINDOW.
        self._told = 0
        self._told_since = 0.0
        #: Reads done and bytes read so far, and the exits asked for: (exit payload,
        #: reads done when asked, bytes read by then plus what the pipe held).
        self._reads = 0
        self._read_total = 0
        self._exits: List[Tuple[bytes, int, int]] = []
        self._exits_lock = threading.Lock()

    #: Between reads the receiver sleeps, so that records gather: every
    #: wake-up of a master thread takes a CPU from a worker, often in the
    #: middle of a log call, and a read of hundreds of records costs the
    #: master no more than a read of a few. It sleeps until the pipe should
    #: hold 1/GATHER_SHARE of its capacity at the rate of the last read,
    #: GATHER_LEAST to GATHER_MOST seconds (the most shrinks with a pipe
    #: under 1 MiB), and not at all once a read finds that much. A wake-up
    #: after a quiet spell sleeps GATHER_LEAST: a burst may follow. The most
    #: is no longer because bursts of large records (5 KB) from many threads
    #: fill a pipe in milliseconds (tests/integration/test_gunicorn.py).
    GATHER_LEAST = 0.001
    GATHER_MOST = 0.005
    GATHER_SHARE = 8
    #: One read takes what the pipe holds, up to this much (see run).
    READ_MOST = 4 << 20
    #: Writers of another wire version are each named once on stderr, at most
    #: TELL_MOST every TELL_WINDOW seconds; one not named yet is named at a
    #: later frame of its own (see _tell_foreign).
    TELL_MOST = 16
    TELL_WINDOW = 5.0

    def _past_deadline(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def run(self) -> None:
        scheduling.background()
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        capacity = framing.pipe_capacity(self._fd)
        enough = capacity // self.GATHER_SHARE
        most = self.GATHER_MOST * min(1.0, capacity / (1 << 20))
        last_expire = last_read = time.monotonic()
        pause = 0.0
        data = b""
        try:
            while not self._past_deadline():
                # Each system call here gives up the GIL and waits to win it
                # back, while the listener or the master's own code computes,
                # often far longer than the call (tens of ms while gunicorn
                # forks workers at a HUP and every CPU is busy). So one read
                # takes the whole pipe, and the pipe is polled only when the
                # last read found it empty: a full pipe read 16 KiB at a time
                # paid that wait per chunk, and workers dropped records.
                try:
                    if not data:  # the last read found the pipe empty: wait for a write
                        poller.poll(250)
                    if pause:
                        time.sleep(pause)
                    data = os.read(self._fd, self.READ_MOST)
                except (BlockingIOError, InterruptedError):
                    data = b""
                self._reads += 1
                self._read_total += len(data)
                now = time.monotonic()
                pause = self.pause(len(data), now - last_read, enough, most)
                last_read = now
                if now - last_expire > 1.0:
                    self.frames.expire(now)
                    last_expire = now
                if data and self._deliver(data):
                    return
                if self._exits:
                    self._release_exits(emptied=len(data) < self.READ_MOST)
            self.abandoned_bytes = framing.pipe_backlog(self._fd)
        except BaseException as exc:  # noqa: BLE001 - report, never die silently
            self._reporter.write(f"forklog: the receiver thread failed: {exc!r}")
        finally:
            self._backlog.close()

    @classmethod
    def pause(cls, read: int, interval: float, enough: int, most: float) -> float:
        """How long to let records gather, after reading ``read`` bytes ``interval`` s after the last read."""
        if read >= enough:
            return 0.0
        if not read:
            return cls.GATHER_LEAST  # after a quiet spell: a burst may follow
        # The time the pipe takes to hold `enough` at the rate of the last read.
        return max(cls.GATHER_LEAST, min(most, enough * interval / read))

    def _deliver(self, data: bytes) -> bool:
        """Queue the records in ``data``; True once the stop marker is seen."""
        frames = self.frames
        before = (frames.garbage_bytes, frames.bad_frames)
        controls, refusals, foreign = frames.control_frames, frames.refusals, frames.foreign_frames
        stop = False
        items: List[Item] = frames.feed(data)
        if frames.control_frames != controls:  # not only records: look at each
            records = items
            items = []
            for item in records:
                flags, writer, boot, seq, payload = item
                if not flags & framing.CONTROL:
                    items.append(item)
                    continue
                if self.stop_token is not None and payload == self.stop_token:
                    stop = True
                    break
                if payload.startswith(framing.DROPS_MARK):
                    items.append((DROPS, writer, boot, seq, payload))  # in order with the writer's records
        if items and not self._backlog.put_many(items, self._past_deadline):
            return False
        if (frames.garbage_bytes, frames.bad_frames) != before:
            self._reporter.report(
                "garbage",
                f"skipped {frames.garbage_bytes} bytes that were not forklog frames "
                f"({frames.bad_frames} bad frames in all)",
            )
        if frames.refusals != refusals:
            self._say_refused()
        if frames.foreign_frames != foreign:
            self._tell_foreign()
        return stop

    #: Exit requests waiting at once, at most: more are settled at stop (and by liveness rounds).
    MAX_EXITS = 4096

    def request_exit(self, pid: int, boots: Optional[Set[int]]) -> bool:
        """Queue ``pid``'s exit (its ``boots``, or all) behind what the pipe holds now.

        Called by the owner's threads once the process is gone: everything it
        wrote is in the pipe by then. The exit is queued once the receiver has
        read that far (its bytes read pass what it had read plus what the pipe
        held, with one more read's margin for a read under way), or the pipe
        was found empty by a read that began after this call.
        """
        payload = (
            EXIT_MARK
            + pid.to_bytes(4, "little")
            + b"".join(b.to_bytes(4, "little") for b in sorted(boots or ()))
        )
        target = self._read_total + framing.pipe_backlog(self._fd) + self.READ_MOST
        with self._exits_lock:
            if len(self._exits) >= self.MAX_EXITS:
                return False
            self._exits.append((payload, self._reads, target))
        return True

    def _release_exits(self, emptied: bool) -> None:
        """Queue the exits whose process's every byte has been read (see request_exit)."""
        with self._exits_lock:
            ready = [
                payload
                for payload, reads, target in self._exits
                if self._read_total >= target or (emptied and self._reads >= reads + 2)
            ]
            if not ready:
                return
            self._exits = [entry for entry in self._exits if entry[0] not in ready]
        items: List[Item] = []
        for payload in ready:
            start = len(EXIT_MARK)
            gone = int.from_bytes(payload[start : start + 4], "little")
            self.frames.expire(pid=gone, boots=boots_of(payload[start + 4 :]))
            items.append((EXITED, gone, 0, 0, payload[start + 4 :]))
        self._backlog.put_many(items, self._past_deadline)

    def _say_refused(self) -> None:
        """Records the reader abandoned to stay within its bounds: said at a bounded rate."""
        frames = self.frames
        self._reporter.report(
            "bound:partial",
            f"abandoned large records to stay within bounds: "
            f"{frames.refused.get('max_record_bytes', 0)} past max_record_bytes={frames.max_record_bytes}, "
            f"{frames.refused.get('partial_records', 0)} past {frames.max_partial_records} records or "
            f"{frames.max_partial_bytes} bytes being put together (in HubStats.incomplete_by_process)",
        )

    def _tell_foreign(self) -> None:
        """Each writer of another wire version, named once; its frames are skipped and counted."""
        frames = self.frames
        now = time.monotonic()
        if now - self._told_since >= self.TELL_WINDOW:
            self._told_since, self._told = now, 0
        news = list(frames.foreign_news.items())
        frames.foreign_news.clear()
        for pid, version in news:
            if self._told >= self.TELL_MOST:
                self._reporter.report(
                    "wire",
                    f"more writers speak another wire version than are named on stderr "
                    f"({frames.foreign_frames} frames of another version skipped in all)",
                )
                return  # the others are named at a later frame of theirs
            self._told += 1
            frames.told(pid, version)
            self._reporter.write(
                f"forklog: pid {pid} speaks wire v{version}, this hub v{framing._VERSION}: its frames "
                "are skipped and counted (HubStats.foreign_by_process); run one forklog version "
                "in the hub and its writers"
            )


def boots_of(data: bytes) -> Optional[Set[int]]:
    """The boots an exit request names, or None (all of the pid's)."""
    boots = {int.from_bytes(data[i : i + 4], "little") for i in range(0, len(data) - len(data) % 4, 4)}
    return boots or None
