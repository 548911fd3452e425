"""The receiver thread: drains the writers' pipes into the backlog until it reads the stop marker.

Each writer has a pipe of its own (:mod:`forklog._master.sources`): a
frame's writer is the pipe it came on, and a writer's exit is the end of
its pipe, queued behind everything it wrote; no frame can claim either
(issue 21, item 7). The stop marker is honoured from the owner's own pipe
only, and only once ``Hub.stop`` made it; the pipes are then read until a
round finds them all empty (or the deadline comes).
"""

from __future__ import annotations

import os
import threading
import time
from typing import Dict, List, Optional

from forklog import _bounded
from forklog._master import scheduling
from forklog._master.backlog import DROPS, EXITED, Backlog, Item
from forklog._master.counters import Counters
from forklog._master.frame_reader import FrameReader
from forklog._master.sources import MAX_PER_PID, Source, Sources
from forklog._stderr import Reporter
from forklog._wire import framing
from forklog._worker.channel import Channel

__all__ = ["EXIT_MARK", "Receiver"]

#: What a forged exit marker starts with: the hub reads no exit from a frame (kept for the tests).
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
        own = Source(channel.read_fd, os.getpid(), channel.boot, -1, owner=True)
        self.sources = Sources(own, channel.registrations)
        self._backlog = backlog
        self._counters = counters
        self._reporter = reporter
        #: Set by Hub.stop just before it sends the token: until then no frame stops the receiver.
        self.stop_token: Optional[bytes] = None
        #: The master enforces the workers' max_record_bytes too (issue 21, item 11).
        self.frames = FrameReader(max_record_bytes=channel.max_record_bytes)
        self.deadline: Optional[float] = None  # set by Hub.stop
        self.abandoned_bytes = 0
        #: Read rounds done: every byte read in a round is queued by its end (the tests wait on it).
        self.rounds = 0
        #: Records still in the writers' pipes when the stop's deadline came, by pid
        #: (read and counted, never written: reported lost by Hub.stop).
        self.unread_by_process: Dict[int, int] = {}
        #: Writers of another wire version named so far in the current TELL_WINDOW.
        self._told = 0
        self._told_since = 0.0

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
        sources = self.sources
        capacity = framing.pipe_capacity(self._fd)
        enough = capacity // self.GATHER_SHARE
        most = self.GATHER_MOST * min(1.0, capacity / (1 << 20))
        last_expire = last_read = time.monotonic()
        pause = 0.0
        read = 0
        stopping = False
        try:
            while not self._past_deadline():
                # Each system call here gives up the GIL and waits to win it
                # back, while the listener or the master's own code computes,
                # often far longer than the call (tens of ms while gunicorn
                # forks workers at a HUP and every CPU is busy). So one read
                # takes what a pipe holds, and the pipes are waited on only
                # when the last round found them empty: a full pipe read 16 KiB
                # at a time paid that wait per chunk, and workers dropped records.
                ready = sources.poller.poll(0 if read or stopping else 250)
                if pause and not stopping:
                    time.sleep(pause)
                    ready = sources.poller.poll(0)
                read = 0
                for fd, _events in ready:
                    if fd == sources.registration_fd:
                        read += 1  # a new pipe: a round that read nothing yet is not the last
                        if sources.accept():
                            self._reporter.report(
                                "bound:writers",
                                f"refused {sources.refused} writers' pipes, past the bounds "
                                f"({sources.most:,} pipes, {MAX_PER_PID} a pid) or malformed: "
                                "their records do not reach the hub",
                            )
                        continue
                    source = sources.by_fd.get(fd)
                    if source is None:
                        continue
                    data = sources.read(fd, min(source.most, self.READ_MOST))
                    if data is None:
                        continue
                    if not data:
                        self._ended(source)
                        continue
                    read += len(data)
                    if self._deliver(data, source):
                        stopping = True
                now = time.monotonic()
                if stopping and not read:
                    return  # every pipe read to its end, as far as the stop goes
                pause = self.pause(read, now - last_read, enough, most)
                last_read = now
                if now - last_expire > 1.0:
                    self.frames.expire(now)
                    last_expire = now
                self.rounds += 1
            self._count_unread()
        except BaseException as exc:  # noqa: BLE001 - report, never die silently
            self._reporter.write(f"forklog: the receiver thread failed: {exc!r}")
        finally:
            self._backlog.close()

    def _count_unread(self) -> None:
        """The stop's deadline came: count (never write) the records the pipes still hold, by writer.

        A pipe is read twice at most (what it holds now; a writer still
        writing is not waited for); what is left after is ``abandoned_bytes``.
        """
        for source in list(self.sources.by_fd.values()):
            for _ in range(2):
                data = self.sources.read(source.fd, source.most)
                if not data:
                    break
                for flags, pid, _boot, _seq, _payload in self.frames.feed(data, source):
                    if not flags & framing.CONTROL:
                        _bounded.add(self.unread_by_process, pid, 1, _bounded.by_pid)
        self.abandoned_bytes = self.sources.backlog()

    def _ended(self, source: Source) -> None:
        """A writer's pipe ended (every write end closed): its exit, behind everything it wrote."""
        if source.owner:
            return
        payload = self.sources.close(source)
        self.frames.expire(pid=source.pid, boots={source.boot})
        self._backlog.put_many([(EXITED, source.pid, source.boot, 0, payload)], self._past_deadline)

    @classmethod
    def pause(cls, read: int, interval: float, enough: int, most: float) -> float:
        """How long to let records gather, after reading ``read`` bytes ``interval`` s after the last read."""
        if read >= enough:
            return 0.0
        if not read:
            return cls.GATHER_LEAST  # after a quiet spell: a burst may follow
        # The time the pipe takes to hold `enough` at the rate of the last read.
        return max(cls.GATHER_LEAST, min(most, enough * interval / read))

    def _deliver(self, data: bytes, source: Source) -> bool:
        """Queue the records in ``data``, from ``source``'s pipe; True once the stop marker is seen."""
        frames = self.frames
        before = (frames.garbage_bytes, frames.bad_frames)
        controls, refusals, foreign = frames.control_frames, frames.refusals, frames.foreign_frames
        stop = False
        items: List[Item] = frames.feed(data, source)
        if frames.control_frames != controls:  # not only records: look at each
            records = items
            items = []
            for item in records:
                flags, writer, boot, seq, payload = item
                if not flags & framing.CONTROL:
                    items.append(item)
                    continue
                if source.owner and self.stop_token is not None and payload == self.stop_token:
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
