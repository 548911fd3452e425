"""The master's sinks for the handlers the application configured: one per file or stream.

Every process attached to the hub adopts the file and stream handlers its
application configures (:mod:`forklog._worker.adoption`) and sends their
lines here as target payloads (:mod:`forklog._wire.adopted_lines`). The same file
configured in four workers is one target: the first time a line for it
arrives, the listener opens one sink for it, from the spec's plain data
alone, and from then on is its only writer, rotating it with the handler's
own settings. ``stats()`` names these sinks by their path (``<stderr>`` for
a stream).

The threat model. gunicorn's master often runs as root while its workers
run as ``--user nobody`` and handle untrusted requests. A compromised
worker can write anything into the pipe, so the pipe is never an authority
to open a file:

* targets the master's own configuration names (``logconfig_dict``, the
  config file, an app loaded with ``--preload``) are *trusted*: adopted in
  the master itself, they never come through the pipe as a request;
* while the workers run as another user than the master (``writer``, set
  from gunicorn's ``user``/``group``), a file target asked for through the
  pipe is refused, whatever its path: no check of the workers' rights made
  here could stay true while a worker can rename the directories on the way
  (symbolic links swapped after the check, a planted ``.lock``). A worker
  of another user keeps such a handler and writes its file itself, as
  without forklog (:mod:`forklog._worker.adoption`); stdout and stderr are
  the master's own and are served;
* a line for stdout or stderr from a worker of another user has its control
  characters escaped (its line breaks kept): no ESC recolours the
  operator's terminal; the owner's and same-user writers' lines are written
  as the application made them;
* stdout and stderr are shared by every writer, of any user: their sinks
  are made with the master's own settings (the encoding of its stream,
  ``backslashreplace``), whatever the spec says; a file target's encoding
  must be one of the stdlib's text codecs that can write any line
  (:func:`forklog._wire.adopted_lines.text_encoding`), so no first spec can
  make the sink lose the other writers' lines;
* at most ``MAX_TARGETS`` file targets are opened; a refused target is
  reported once, naming the path and the reason, and its records are counted
  as that target's drops;
* what the master keeps per spec is bounded in entries and bytes
  (``MAX_SPECS``, ``MAX_SPEC_TABLE_BYTES``): the specs already seen, by the
  bytes they came as, are a cache emptied when full; the refused ones are
  remembered up to the bound, past it a refusal is counted under
  ``<refused>`` and said at a bounded rate.
"""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import os
import sys
from typing import Callable, Dict, FrozenSet, List, NamedTuple, Optional, Set, Tuple

from forklog import _fork
from forklog._master import customized, twice
from forklog._master.buffered import BufferedSink
from forklog._master.counters import Counters
from forklog._master.log_directory import LogDirectory
from forklog._master.sinks import RotatingFileSink
from forklog._master.target_sinks import make_sink
from forklog._stderr import Reporter
from forklog._wire.adopted_lines import TargetLine, TargetSpec
from forklog._wire.controls import escape_lines

__all__ = ["Credentials", "Targets", "reopen_file", "take_over"]

#: How many distinct file targets the master opens at most (stdout and stderr aside).
MAX_TARGETS = 256
#: How many distinct specs each of the master's tables of specs keeps (the
#: specs seen, the specs refused), and how many bytes of specs at most: a
#: writer sending new specs without end makes the master keep no more.
MAX_SPECS = 1024
MAX_SPEC_TABLE_BYTES = 1 << 20


class Credentials(NamedTuple):
    """The user the writers run as: its uid and every group it has."""

    uid: int
    gids: FrozenSet[int]


class _Open(NamedTuple):
    name: str
    sink: logging.Handler
    write: Callable[[TargetLine], bool]
    #: The master's stdout or stderr (an operator's terminal, maybe).
    stream: bool = False


def take_over(name: str, handler: logging.Handler, counters: Counters, reporter: Reporter) -> None:
    """Make ``handler`` a sink of the hub: its errors counted and reported, its flush once per batch.

    The hub, not ``logging.shutdown()`` or a ``dictConfig()`` elsewhere in
    the process, decides when a sink is flushed and closed (H6, H20).
    """
    forget_handler(handler)

    def handle_error(record: logging.LogRecord) -> None:
        # Not lost here: write() returns False, and Targets.write counts the record.
        counters.sink_failure(reporter, name, "to write a record", sys.exc_info()[1], failed=0)

    handler.handleError = handle_error  # type: ignore[method-assign]

    def say(what: str) -> None:  # a failure said as what it is (records held, a backup left as it is)
        counters.sink_failure(reporter, name, what, sys.exc_info()[1], failed=0)

    if isinstance(handler, BufferedSink):
        handler.say_delivery = say
    if isinstance(handler, RotatingFileSink):
        handler.say_failure = say
    if isinstance(handler, logging.FileHandler) and handler.errors is None:
        # A lone surrogate (bytes decoded with surrogateescape upstream) is
        # written escaped, not lost with an error per record.
        handler.errors = "backslashreplace"
        if isinstance(handler, RotatingFileSink):
            handler._errors = "backslashreplace"
        reconfigure = getattr(handler.stream, "reconfigure", None)
        if callable(reconfigure):
            with contextlib.suppress(Exception):
                reconfigure(errors="backslashreplace")
    inner = getattr(handler, "handler", None)  # an Isolated sink's own handler
    if isinstance(inner, logging.Handler):
        inner.handleError = handle_error  # type: ignore[method-assign]
    if isinstance(handler, logging.StreamHandler):
        # StreamHandler.emit() flushes after every record: one system call
        # each. The listener flushes once per batch instead.
        handler._forklog_flush = handler.flush  # type: ignore[attr-defined]
        handler.flush = _no_flush  # type: ignore[method-assign]


def _no_flush() -> None:
    """A stream sink's flush between two batches: the listener flushes after the batch."""


def forget_handler(handler: logging.Handler) -> None:
    """Take ``handler`` out of logging's shutdown list so only the hub closes it."""
    with logging._lock:  # type: ignore[attr-defined]
        for ref in list(logging._handlerList):  # type: ignore[attr-defined]
            if ref() is handler:
                logging._handlerList.remove(ref)  # type: ignore[attr-defined]


class Targets:
    """The adopted targets' sinks, opened on their first line; only the listener writes them."""

    def __init__(self, counters: Counters, reporter: Reporter) -> None:
        self._counters = counters
        self._reporter = reporter
        #: Each spec seen, as the bytes it came as: its target's sink. A cache,
        #: emptied when it reaches MAX_SPECS or MAX_SPEC_TABLE_BYTES.
        self._open: Dict[bytes, _Open] = {}
        self._open_bytes = 0
        #: The targets opened, by label: at most MAX_TARGETS files, and the two streams.
        self._by_label: Dict[str, _Open] = {}
        #: The app's own rotation functions and names, by spec (see forklog._master.customized).
        self._custom: Dict[bytes, customized.Custom] = {}
        #: Each file's settings, as the master writes it (see forklog._master.twice).
        self._settings: Dict[str, TargetSpec] = {}
        #: Targets one of the hub's own sinks writes (see serve): never opened twice.
        self._served: Dict[bytes, _Open] = {}
        self._streams = 0
        #: Refused specs, with the name their drops are counted under; at most
        #: MAX_SPECS of them and MAX_SPEC_TABLE_BYTES.
        self._refused: Dict[bytes, str] = {}
        self._refused_bytes = 0
        self._trusted: Set[bytes] = set()
        #: The directories of trusted file targets, held open since the owner
        #: configured them, before any worker ran (log_directory), by path.
        self._directories: Dict[str, LogDirectory] = {}
        #: The permission bits of the files the targets create (the hub's
        #: ``file_mode``, not the stdlib's 0o666): set from the settings.
        self.file_mode = 0o640
        self._owner = os.getpid()
        #: The user the writers run as, when it is not the master's: no file
        #: target they ask for is opened (see the module's threat model).
        self.writer: Optional[Credentials] = None
        #: The uid each writer registered with, by pid (Sources keeps it): see _foreign_now.
        self.registered: Dict[int, int] = {}

    def trust(self, spec: bytes, custom: Optional[customized.Custom] = None) -> None:
        """A target the owner's own configuration names: opened without the checks.

        Its directory is opened now, in the owner, before any worker can
        change the path to it; its file later, relative to it. ``custom``:
        the handler's own namer, rotator, timed suffix (forklog._master.customized).
        """
        self._trusted.add(spec)
        with contextlib.suppress(ValueError):
            target = TargetSpec.from_bytes(spec)
            if custom and customized.directory_is_own(target.path):
                self._custom[spec] = custom
            elif custom:
                self._reporter.report(
                    f"custom:{target.path}", customized.not_own_directory(target.path, custom)
                )
            if target.kind != "stream" and len(self._directories) < MAX_TARGETS:
                where = os.path.dirname(target.path)
                if where not in self._directories:
                    self._directories[where] = LogDirectory(where, self.file_mode)

    def _foreign_now(self, pid: int) -> bool:
        """Whether ``pid`` runs as another user than the master (and not root), now.

        The uid a writer registered with can be stale: a worker forked as
        root registers at once, then drops to its user (gunicorn's and
        Celery's ``--user``/``--uid``). So its effective uid is read now, from
        ``/proc``; a writer already gone is judged by its registration.
        """
        mine = os.geteuid()
        try:
            with open(f"/proc/{pid}/status") as status:
                for line in status:
                    if line.startswith("Uid:"):
                        return int(line.split()[2]) not in (mine, 0)
        except (OSError, ValueError, IndexError):
            pass
        # Gone already (or no /proc): judged by the uid it registered with. A writer that registered
        # as root, dropped to another user, named a file and exited before the master read it is
        # judged as root: the one case this leaves open (docs/security.md).
        return self.registered.get(pid, mine) not in (mine, 0)

    def _say_twice(self, spec: TargetSpec, sink: Optional[logging.Handler]) -> None:
        """A second configuration of an open file: the rule, and said once per file."""
        first = self._settings.get(spec.label)
        if first is None or first == spec or len(self._settings) >= MAX_TARGETS:
            return
        kept, said = twice.merge(first, spec, sink)
        self._settings[spec.label] = kept
        if said is not None:
            self._reporter.report(f"twice:{spec.label}", said)

    def serve(self, spec: bytes, name: str, sink: RotatingFileSink) -> None:
        """Text sent for ``spec`` goes to ``sink``, one of the hub's own sinks, as it is (no terminator).

        gunicorn's ``wsgi.errors`` writes an app's text to its error log's
        stream: in a worker, that stream sends it here, and the hub's sink for
        the error log appends it, the one writer of that file.
        """
        self._served[spec] = _Open(name, sink, lambda line: sink.write_text(line.text))

    def sinks(self) -> List[Tuple[str, logging.Handler]]:
        return [(entry.name, entry.sink) for entry in list(self._by_label.values())]

    def kept(self) -> Tuple[int, int]:
        """The specs the master keeps from the pipe, and their bytes (bounded: see MAX_SPECS)."""
        return len(self._open) + len(self._refused), self._open_bytes + self._refused_bytes

    def dropped(self) -> Dict[str, int]:
        """Records each target could not take (refused, or failed to write), by name."""
        failed = self._counters.sink_failed
        names = {entry.name for entry in self._by_label.values()} | set(self._refused.values())
        if "<refused>" in failed:
            names.add("<refused>")
        return {name: failed.get(name, 0) + getattr(self._sink(name), "dropped", 0) for name in names}

    def _sink(self, name: str) -> Optional[logging.Handler]:
        entry = self._by_label.get(name)
        return entry.sink if entry is not None else None

    # -- writing -------------------------------------------------------------

    def write(self, line: TargetLine, pid: int) -> None:
        """Append ``line`` to its target's sink, opening it on first use; a failure is counted."""
        counters = self._counters
        entry = self._open.get(line.spec) or self._served.get(line.spec) or self._open_target(line.spec, pid)
        if entry is None:
            name = self._refused.get(line.spec, "<refused>")
            counters.sink_failed[name] = counters.sink_failed.get(name, 0) + 1
            return
        if entry.stream and self.writer is not None and pid != self._owner:
            # A worker of another user: no control character of its reaches the
            # master's terminal raw (its own line breaks kept); the owner's lines
            # and a same-user writer's stay byte for byte the app's, colours too.
            line = line._replace(text=escape_lines(line.text))
        try:
            written = entry.write(line)
        except Exception as exc:  # noqa: BLE001 - a sink never stops the listener
            counters.sink_failure(self._reporter, entry.name, "on a record", exc)
            return
        if written:
            counters.written[entry.name] += 1
        else:
            counters.sink_failed[entry.name] = counters.sink_failed.get(entry.name, 0) + 1

    def _open_target(self, data: bytes, pid: int) -> Optional[_Open]:  # noqa: PLR0911 - a refusal each
        if data in self._refused:
            return None
        try:
            spec = TargetSpec.from_bytes(data)
        except ValueError as exc:
            return self._refuse(data, "<refused>", f"a target from pid {pid} was refused: {exc}")
        label = spec.label
        same = self._by_label.get(label)
        if same is not None:
            # One sink per target: a second configuration of the same file
            # (other rotation settings, another encoding) writes to the first (forklog._master.twice).
            self._say_twice(spec, same.sink)
            return self._remember(data, same)
        stream = spec.kind == "stream"
        if not stream and len(self._by_label) - self._streams >= MAX_TARGETS:
            return self._refuse(data, label, f"target {label} refused: already {MAX_TARGETS} targets open")
        if data not in self._trusted and not stream and self._foreign_now(pid):
            self._reporter.report(
                f"foreign:{pid}",
                f"target {label} asked for by pid {pid}, of another user than the master, refused: the "
                "master opens no file such a process names; its records are dropped",
            )
            return None
        if self.writer is not None and data not in self._trusted and not stream:
            return self._refuse(
                data,
                label,
                f"target {label} asked for by pid {pid} refused: the workers run as another user than "
                "the master, which opens no file they name (configure it in the master: --preload or "
                "logconfig_dict); its records are dropped",
            )
        try:
            sink, write = make_sink(spec, self.file_mode, self._directories.get(os.path.dirname(spec.path)))
        except Exception as exc:  # noqa: BLE001 - bad settings: reported, counted
            return self._refuse(data, label, f"target {label} could not be opened: {exc!r}")
        customized.apply(sink, self._custom.get(data))
        take_over(label, sink, self._counters, self._reporter)
        counters = self._counters
        counters.written.setdefault(label, 0)
        counters.sink_errors.setdefault(label, 0)
        entry = _Open(label, sink, write, stream)
        self._by_label[label] = entry
        self._settings.setdefault(label, spec)
        self._streams += stream
        return self._remember(data, entry)

    def _remember(self, data: bytes, entry: _Open) -> _Open:
        """Keep ``data``'s sink for its next lines; a full cache is emptied first (the sinks stay)."""
        if len(self._open) >= MAX_SPECS or self._open_bytes + len(data) > MAX_SPEC_TABLE_BYTES:
            self._open.clear()
            self._open_bytes = 0
        self._open[data] = entry
        self._open_bytes += len(data)
        return entry

    def _refuse(self, data: bytes, name: str, why: str) -> Optional[_Open]:
        if len(self._refused) < MAX_SPECS and self._refused_bytes + len(data) <= MAX_SPEC_TABLE_BYTES:
            self._refused[data] = name
            self._refused_bytes += len(data)
            self._reporter.write(f"forklog: {why}")
        else:
            # Past the bound: not remembered, its records counted under "<refused>".
            self._reporter.report(
                "refused", f"{why} (and no more refused targets are remembered: {MAX_SPECS} already)"
            )
        return None  # never opened: the caller counts its records

    # -- the sinks' lifecycle, under the dispatch lock -----------------------

    def flush(self) -> None:
        """Once per batch: the stream and file sinks' held lines go out."""
        for entry in list(self._by_label.values()):
            flush = getattr(entry.sink, "_forklog_flush", None)
            if flush is not None:
                try:
                    flush()
                except Exception as exc:  # noqa: BLE001
                    self._reporter.report(f"sink:{entry.name}", f"sink {entry.name} failed to flush: {exc!r}")

    def reopen(self) -> None:
        """USR1: reopen every file target (logrotate moved them)."""
        for entry in list(self._by_label.values()):
            reopen_file(entry.name, entry.sink, self._reporter)

    def close(self) -> None:
        for entry in list(self._by_label.values()):
            sink = entry.sink
            try:
                if sink.__dict__.pop("_forklog_flush", None) is not None:
                    del sink.flush
                sink.flush()
                sink.close()
            except Exception as exc:  # noqa: BLE001
                self._reporter.write(f"forklog: closing sink {entry.name} failed: {exc!r}")

    def release_in_child(self) -> None:
        """In a forked child: the targets' files, and the directories held for them, are the master's."""
        for directory in list(self._directories.values()):
            directory.release_in_child()
        for entry in list(self._by_label.values()):
            forget_handler(entry.sink)
            _fork.release_descriptors(entry.sink)


def reopen_file(name: str, sink: logging.Handler, reporter: Reporter) -> None:
    """Open a file sink's path again (USR1, after logrotate moved it); a failure is reported."""
    if not isinstance(sink, logging.FileHandler):
        return
    try:
        sink.acquire()
        try:
            if sink.stream is not None:
                sink.stream.close()
            sink.stream = sink._open()
        finally:
            sink.release()
    except Exception as exc:  # noqa: BLE001
        reporter.report(f"reopen:{name}", f"could not reopen sink {name}: {exc!r}")
