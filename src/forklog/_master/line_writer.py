"""Writing the lines the emitting processes made themselves.

When every sink of a hub is a file or a stream whose formatter the listener
can reproduce, each emitting process makes its record's lines, one per
distinct formatter (:func:`forklog._wire.lines.encode_lines`), and the master only
writes them: formatting, most of a record's cost in the master, is spread
over the workers, and a batch of such records reaches a file as one
encoded block (one ``write()``) instead of a line at a time.

The listener hands every batch to :meth:`LineWriter.dispatch`. Records that
travel as fields (those with a traceback or a stack, the hub's own, anything
from a process forked before the hub started) take the listener's usual
path, in their place in the batch: each sink still sees its records in the
order they were read.
"""

from __future__ import annotations

import collections
import logging
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence, Set, Tuple

from forklog import _renderers, formatters
from forklog import _wire as wire
from forklog._master.backlog import EXITED
from forklog._master.buffered import BufferedSink
from forklog._master.counters import Counters
from forklog._master.lanes import NOT_WRITTEN, Lane
from forklog._master.ledger import Account
from forklog._master.sinks import RotatingFileSink
from forklog._stderr import Reporter
from forklog._wire.controls import clean, escape_line_bytes, escape_lines
from forklog._wire.fields import valid_time
from forklog._wire.framing import NO_SEQ
from forklog._wire.lines import TracedLines

__all__ = ["LINES_BYTE", "FieldSink", "LineSink", "LineWriter", "line_formatter"]

LINES_BYTE = bytes([wire.LINES])
_HEAD = wire.LINES_HEAD

#: Writes lines (UTF-8, without terminators) to a sink; returns how many it could not write.
Writer = Callable[[List[bytes]], int]


class LineSink(NamedTuple):
    """A sink of a batch's plan that takes lines."""

    name: str
    sink: logging.Handler
    level: int
    #: Which of a payload's lines is this sink's.
    line: int
    write: Writer
    #: Its formatter escapes control characters (forklog's console): each line is checked.
    escape: bool = False


class FieldSink(NamedTuple):
    """A buffered sink (syslog, OTLP) beside them, which takes records made of the fields."""

    name: str
    sink: BufferedSink
    level: int
    #: What it refuses, by (level name, pid), when it was refusing at the
    #: batch's start; None if it takes records.
    refused: Optional[List[Tuple[str, int]]]


class LineWriter:
    """Which sinks take the lines of a lines payload, and the batch loop that feeds them."""

    def __init__(self, counters: Counters, reporter: Reporter) -> None:
        self._counters = counters
        self._reporter = reporter
        #: Sink name -> the index of its line in a payload, and the renderer
        #: key of the formatter the emitting processes make it with.
        self._index: Dict[str, Tuple[int, Tuple[Any, ...]]] = {}
        self._stale: Set[str] = set()

    @staticmethod
    def formatter_of(sink: logging.Handler) -> logging.Formatter:
        formatter: logging.Formatter = sink.formatter or logging._defaultFormatter  # type: ignore[attr-defined]
        return formatter

    def use(self, index: Dict[str, Tuple[int, logging.Formatter]]) -> None:
        """Sinks whose lines the emitting processes make: name -> (index in a payload, formatter)."""
        self._index = {
            name: (position, _renderers.renderer_key(formatter))
            for name, (position, formatter) in index.items()
        }

    @property
    def active(self) -> bool:
        return bool(self._index)

    def target(self, name: str, sink: logging.Handler) -> Optional[LineSink]:
        """How ``sink`` takes its line of a payload; None: it gets a record made of the payload.

        None too when its formatter or filters changed after the hub started
        (the emitting processes still make its line the old way); that is
        reported once.
        """
        known = self._index.get(name)
        if known is None or isinstance(sink, BufferedSink):
            return None
        position, key = known
        if sink.filters or _renderers.renderer_key(self.formatter_of(sink)) != key:
            if name not in self._stale:
                self._stale.add(name)
                self._reporter.report(
                    f"stale:{name}",
                    f"sink {name}'s formatter or filters changed after the hub started: records "
                    "whose lines the workers made reach it with their name, level, message and time only",
                )
            return None
        writer = _writer(sink)
        if writer is None:
            return None
        return LineSink(name, sink, sink.level, position, writer, _escapes(self.formatter_of(sink)))

    def lane(self, name: str, sink: logging.Handler) -> Optional[Lane]:
        """``sink``'s lane for one lines payload on its own (see ``Dispatch``); None: it takes the record."""
        target = self.target(name, sink)
        if target is None:
            return None
        position, write = target.line, target.write
        if target.escape:

            def checked_lane(lines: List[bytes], _pid: int, _exc_text: Any) -> Optional[Callable[..., Any]]:
                return NOT_WRITTEN if write([checked(lines, position)]) else None

            return checked_lane

        def line_lane(lines: List[bytes], _pid: int, _exc_text: Any) -> Optional[Callable[..., Any]]:
            return NOT_WRITTEN if write([lines[position]]) else None

        return line_lane

    def dispatch(
        self,
        batch: Sequence[Tuple[int, int, int, int, bytes]],
        targets: List[LineSink],
        others: Callable[[Tuple[int, int, int, int, bytes]], None],
        buffered: Sequence[FieldSink] = (),
    ) -> float:
        """Write the lines payloads of ``batch``; hand every other item to ``others``, in order.

        Every sink must be in ``targets``. Returns the time of the last
        record written from a lines payload (0.0 if none).
        """
        counters = self._counters
        pending: List[List[bytes]] = [[] for _ in targets]
        # Every sink takes the payload's only line (one distinct formatter): the common case.
        # A sink that escapes (the console) takes it checked (see checked()).
        single = [
            (target.level, bucket)
            for target, bucket in zip(targets, pending, strict=False)
            if not target.escape
        ]
        single_checked = [
            (target.level, bucket) for target, bucket in zip(targets, pending, strict=False) if target.escape
        ]
        one_line = all(target.line == 0 for target in targets)
        several = [
            (target.level, target.line, bucket, target.escape)
            for target, bucket in zip(targets, pending, strict=False)
        ]
        lowest = min((target.level for target in targets), default=0)
        #: Each writer's records in the batch, settled in the ledger at a flush.
        seen: Dict[Tuple[int, int], Account] = {}
        unpack = _HEAD.unpack_from
        head_size = wire.LINES_HEAD_SIZE
        last = 0.0
        received = 0
        writer_pid = writer_boot = -1
        mine = Account()
        refused_all = bool(buffered) and all(target.refused is not None for target in buffered)
        refusals: List[Tuple[int, int]] = []
        tally = refusals.append
        for item in batch:
            kind, pid, boot, seq, payload = item
            if kind >= EXITED or payload[:1] != LINES_BYTE:
                if received:
                    self._flush(targets, pending, seen)
                    counters.received += received
                    received = 0
                    writer_pid = writer_boot = -1
                others(item)
                continue
            try:
                _marker, count, levelno, created, name_size, chain_size, fields_size = unpack(payload)
                if levelno < lowest and not buffered:
                    # No sink takes it. The logger's name is read for the first only.
                    if counters.unrouted_first is None:
                        name = payload[head_size : head_size + name_size].decode("utf-8", "replace")
                        counters.unrouted_record(name, logging.getLevelName(levelno))
                    else:
                        counters.unrouted += 1
                elif count == 1 and not chain_size and not fields_size and one_line:
                    line = payload[head_size + name_size :]
                    for level, bucket in single:
                        if levelno >= level:
                            bucket.append(line)
                    for level, bucket in single_checked:
                        if levelno >= level:
                            bucket.append(line if clean(line) else escape_line_bytes(line))
                else:
                    lines = wire.decode_lines(payload).lines
                    for level, index, bucket, escape in several:
                        if levelno >= level:
                            bucket.append(checked(lines, index) if escape else lines[index])
                if refused_all:
                    # Every buffered sink refuses (a syslog server down): a count, nothing more.
                    tally((levelno, pid))
                elif buffered:
                    self._to_buffered(buffered, payload, levelno, pid, fields_size)
            except Exception as exc:  # noqa: BLE001
                counters.record_received(pid, boot, seq)
                counters.undecodable(self._reporter, pid, exc)
                continue
            received += 1
            last = created
            if seq != NO_SEQ:
                # A writer's records come in runs: look it up when it changes.
                if pid != writer_pid or boot != writer_boot:
                    writer_pid, writer_boot = pid, boot
                    found = seen.get((pid, boot))
                    mine = seen[(pid, boot)] = Account() if found is None else found
                mine.received += 1
                if seq >= mine.used:  # threads of a writer can send out of order
                    mine.used = seq + 1
        if received:
            self._flush(targets, pending, seen)
            counters.received += received
        if refusals:
            self._refused(buffered, collections.Counter(refusals))
        # A worker's time is untrusted: checked once a batch, where the listener uses it.
        return last if valid_time(last) else 0.0

    def _refused(self, buffered: Sequence[FieldSink], tally: Mapping[Tuple[int, int], int]) -> None:
        """Count what the refusing buffered sinks did not get: ``tally`` is records by (level, pid)."""
        written = self._counters.written
        for name, sink, level, _refused in buffered:
            counts = {
                (logging.getLevelName(levelno), pid): count
                for (levelno, pid), count in tally.items()
                if levelno >= level
            }
            written[name] += sum(counts.values())  # handed to the sink, as the fast lane counts
            sink.count_refused(counts)

    def _to_buffered(
        self, buffered: Sequence[FieldSink], payload: bytes, levelno: int, pid: int, fields_size: int
    ) -> None:
        """Give each buffered sink the record made of the payload's fields, or count its refusal.

        A payload without fields comes from a writer told that these sinks
        refuse records (see ``Channel._want_fields``): it is their drop.
        """
        written = self._counters.written
        record: Optional[logging.LogRecord] = None
        for name, sink, level, refused in buffered:
            if levelno < level:
                continue
            written[name] += 1  # handed to the sink: what it drops, it counts (as the fast lane)
            if refused is not None:
                refused.append((logging.getLevelName(levelno), pid))
            elif not fields_size:
                sink.count_refused([(logging.getLevelName(levelno), pid)])
            else:
                if record is None:
                    fields = wire.lines_fields(payload)
                    assert fields is not None
                    record = wire.record_from_fields(fields, pid)
                sink.emit(record)

    def _flush(
        self, targets: List[LineSink], pending: List[List[bytes]], seen: Dict[Tuple[int, int], Account]
    ) -> None:
        counters = self._counters
        ledger = counters.ledger
        for (pid, boot), account in seen.items():
            ledger.received_many(pid, boot, account.received, account.used - 1)
        seen.clear()
        written = counters.written
        for (name, _sink, _level, _index, write, _escape), lines in zip(targets, pending, strict=False):
            if not lines:
                continue
            try:
                failed = write(lines)
            except Exception as exc:  # noqa: BLE001 - a sink that raised: counted and reported
                failed = len(lines)
                counters.sink_failure(self._reporter, name, f"on {failed} records", exc, failed)
            written[name] += len(lines) - failed
            lines.clear()


def line_formatter(sink: logging.Handler) -> Optional[logging.Formatter]:
    """``sink``'s formatter if the emitting processes can make its lines, else None.

    They can for an unfiltered file or stream sink (a ``RotatingFileSink``,
    a ``StreamHandler``, a ``FileHandler``) whose formatter the listener
    reproduces (:func:`forklog._renderers.line_renderer`) from what a worker
    has (:func:`forklog._renderers.record_renderer`).
    """
    if isinstance(sink, BufferedSink) or sink.filters or _writer(sink) is None:
        return None
    formatter = LineWriter.formatter_of(sink)
    try:
        made = (
            _renderers.line_renderer(formatter) is not None
            and _renderers.record_renderer(formatter) is not None
        )
    except Exception:  # noqa: BLE001 - a formatter set up in a way not foreseen
        return None
    if made and _escapes(formatter) and not str(getattr(formatter, "_fmt", None) or "").isprintable():
        # Colours in its own format: the master formats (escaping the fields, not the format),
        # since it would escape the colours of a line a worker made.
        return None
    return formatter if made else None


def _escapes(formatter: logging.Formatter) -> bool:
    """Whether ``formatter`` escapes control characters (forklog's console): its lines are checked."""
    return type(formatter) is formatters.TextFormatter and formatter.escape_newlines


def checked(lines: List[bytes], index: int) -> bytes:
    """The ``index``-th of a payload's ``lines`` for a sink that escapes control characters.

    The emitting process, which may be hostile, made the line: the master
    appends it only without a control character but TAB (else escaped,
    so it can neither forge a line nor drive a terminal). The traceback's
    text, which the master made, keeps the line breaks between its lines,
    each line escaped.
    """
    line = lines[index]
    traceback = lines.traceback if type(lines) is TracedLines else b""
    if not traceback:
        return line if clean(line) else escape_line_bytes(line)
    head = line[: len(line) - len(traceback) - 1]  # without the line break before the traceback
    if not clean(head):
        head = escape_line_bytes(head)
    text = escape_lines(traceback.decode("utf-8", "replace")).encode("utf-8")
    return head + b"\n" + text


def _writer(sink: logging.Handler) -> Optional[Writer]:
    kind = type(sink)
    patched = "emit" in sink.__dict__ or "format" in sink.__dict__ or "emit_line" in sink.__dict__
    if patched or kind.format is not logging.Handler.format:
        return None
    if kind.emit is RotatingFileSink.emit and kind.emit_line is RotatingFileSink.emit_line:  # type: ignore[attr-defined]
        if kind.emit_lines is RotatingFileSink.emit_lines:  # type: ignore[attr-defined]
            return sink.emit_lines  # type: ignore[attr-defined, no-any-return]
        return None
    if kind.emit not in (logging.StreamHandler.emit, logging.FileHandler.emit):
        return None
    stream_sink: logging.StreamHandler[Any] = sink  # type: ignore[assignment]

    def write_stream(lines: List[bytes]) -> int:
        stream = stream_sink.stream
        if stream is None:
            if not isinstance(stream_sink, logging.FileHandler):
                return len(lines)
            stream = stream_sink.stream = stream_sink._open()  # FileHandler(delay=True), as its emit() does
        terminator = stream_sink.terminator
        try:
            stream.write(terminator.join([line.decode("utf-8", "replace") for line in lines]) + terminator)
            stream_sink.flush()
        except RecursionError:
            raise
        except Exception:  # noqa: BLE001 - as StreamHandler.emit does: handleError reports it
            stream_sink.handleError(logging.makeLogRecord({"msg": "forklog: a batch of lines"}))
        return 0

    return write_stream
