"""Sinks tuned for a single writer per process: the hub's listener.

``logging.handlers.RotatingFileHandler`` decides on every record whether to
roll over by formatting the record a second time, asking the text stream for
its position (``TextIOWrapper.tell()``, slow) and, since Python 3.11,
calling ``os.path.exists`` and ``os.path.isfile``: two ``stat`` calls per
record. With one writer, the file's size can simply be counted.

Two processes can still share a file: during a USR2 upgrade the old and the
new gunicorn master each run a hub on the same path. So the sink writes
whole lines only, a batch at a time, with one ``write()`` on an ``O_APPEND``
descriptor (another process's lines land between batches, never inside a
line), and rotates under an ``flock`` after checking that the path is still
the file it has open: if another process rotated first, it reopens instead
of renaming that process's fresh file over the old one.

A file sink fails in ordinary ways: a full disk, a directory made read-only,
the file deleted under it, no permission to open it at start. None of these
may stop the listener or flood stderr, and each must heal by itself:

* a batch that cannot be written is counted in ``dropped`` and reported
  through ``handleError`` once (the hub turns that into a rate-limited line
  on stderr), never once per record;
* a file that cannot be opened (the constructor included) is tried again at
  most once per ``RETRY_INTERVAL`` seconds, while records are counted lost;
* at most once per ``CHECK_INTERVAL`` seconds the sink checks that the path
  is still the file it writes; if the file was deleted or moved away it
  opens the path again.
"""

from __future__ import annotations

import codecs
import contextlib
import io
import locale
import logging
import logging.handlers
import os
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

from forklog._master import rotation
from forklog._master.log_directory import LogDirectory
from forklog._master.rotation import Compressor, Key, key_of

__all__ = ["RotatingFileSink", "Sink", "named_sinks"]

#: A hub's sink: a handler, or a (name, handler) pair to name it in ``stats()``.
Sink = Union[logging.Handler, Tuple[str, logging.Handler]]


class RotatingFileSink(logging.handlers.RotatingFileHandler):
    """A ``RotatingFileHandler`` that counts what it writes and writes whole lines.

    Size rotation happens when the next line would take the file past
    ``maxBytes`` (counted in encoded bytes); time rotation, with ``when``
    ('S', 'M', 'H', 'D' or 'midnight', as ``TimedRotatingFileHandler``),
    ``interval`` and ``utc``, when the period that began with the file ends.
    Both may be on; either way the backups are ``app.log.1`` (the newest)
    to ``app.log.<backupCount>``, and with ``backupCount=0`` nothing rotates.
    ``compress=True`` gzips each backup in a background thread
    (``app.log.1.gz``). Files are created with permissions ``mode`` (0o640;
    the umask may only remove bits); a string ``mode`` is the stdlib's open
    mode ('a', or 'w' to truncate once at start) with the default permissions.

    Lines are held until :meth:`flush`, which the hub calls once per batch
    (and ``emit`` itself calls when the sink is used on its own).
    """

    #: Says to adoption (forklog._wire.adopted_lines) that this class, not a
    #: subclass of it, is forklog's own file sink, without importing the master.
    forklog_own_file_sink = True
    #: Seconds between two attempts to open a file that could not be opened.
    RETRY_INTERVAL = 1.0
    #: Seconds between two checks that the path is still the file being written.
    CHECK_INTERVAL = 1.0

    #: Records this sink lost: not formatted, not encoded, or not written.
    dropped = 0
    #: Seconds :meth:`close` waits for a compression still running.
    close_timeout = 3.0

    def __init__(  # noqa: PLR0917 - positional like the stdlib handler it replaces
        self,
        filename: Union[str, os.PathLike[str]],
        mode: Union[int, str] = 0o640,
        maxBytes: int = 0,
        backupCount: int = 0,
        encoding: Optional[str] = None,
        delay: bool = False,
        errors: Optional[str] = None,
        *,
        when: Optional[str] = None,
        interval: int = 1,
        utc: bool = False,
        compress: bool = False,
    ) -> None:
        if isinstance(mode, str):
            if mode not in ("a", "w"):
                raise ValueError(f"RotatingFileSink: mode={mode!r}: expected 'a', 'w' or permission bits")
            self._truncate, self.file_mode = mode == "w" and maxBytes <= 0, 0o640
        elif isinstance(mode, bool) or not isinstance(mode, int) or not 0 <= mode <= 0o7777:
            raise ValueError(f"RotatingFileSink: mode={mode!r}: expected permission bits such as 0o640")
        else:
            self._truncate, self.file_mode = False, mode
        self.when = rotation.check_when(when, interval) if when is not None else None
        self.interval = interval
        self.utc = utc
        self.compress = compress
        self.dropped = 0
        #: When the time trigger falls due next (``time.time()`` scale), or None.
        self.rollover_at: Optional[float] = None
        self._lines: List[bytes] = []
        self._pending = 0  # bytes in _lines
        self._size = 0  # bytes in the file, as far as this process knows
        self._key: Optional[Key] = None  # the identity of the open file
        self._torn = False  # a failed write left a partial line in the file
        self._fault: Optional[OSError] = None  # why the file is not open
        self._retry_at = 0.0  # monotonic: next attempt to open it
        self._next_check = 0.0  # monotonic: next check that the path is still the file
        self._rotate_retry_at = 0.0  # monotonic: next attempt after a failed rotation
        self._last: Optional[logging.LogRecord] = None
        self._compressor: Optional[Compressor] = None
        # Opened here, not by the base class, so a fault does not raise.
        super().__init__(filename, "a", maxBytes, backupCount, encoding, True, errors)
        #: The file's directory, held open from now on: every open, rename and
        #: lock is relative to it, never through a link (log_directory).
        self.directory = LogDirectory(os.path.dirname(self.baseFilename), self.file_mode, create=not delay)
        self._file_name = os.path.basename(self.baseFilename)
        codec = self.encoding if self.encoding not in (None, "locale") else None
        self._codec = codec or locale.getpreferredencoding(False)
        self._errors = errors or "strict"
        #: Whether lines already in UTF-8 are the bytes this file wants.
        self._utf8 = codecs.lookup(self._codec).name == "utf-8"
        self.delay = delay
        if not delay:
            with contextlib.suppress(OSError):  # counted and reported when records come
                self._reopen()
        if self.when is not None and backupCount > 0:
            try:
                start = self.directory.stat(self._file_name).st_mtime
            except OSError:
                start = time.time()
            self.rollover_at = rotation.next_rollover(start, self.when, interval, utc)

    # -- opening -----------------------------------------------------------------

    def _open(self) -> io.TextIOWrapper:
        """Open the path (creating it with ``file_mode``); also what ``Hub.reopen`` calls."""
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
        flags |= os.O_TRUNC if self._truncate else 0
        fd = self.directory.open(self._file_name, flags, self.file_mode)  # a regular file, no link followed
        try:
            st = os.fstat(fd)
            stream = os.fdopen(fd, "a", encoding=self._codec, errors=self._errors)
        except BaseException:
            os.close(fd)
            raise
        self._truncate = False
        self._size, self._key, self._torn, self._fault = st.st_size, key_of(st), False, None
        self._next_check = time.monotonic() + self.CHECK_INTERVAL
        now = time.time()
        if self.when is not None and self.rollover_at is not None and now >= self.rollover_at:
            # A new file while the period is over: whoever moved the old one
            # (this sink, another process sharing it, logrotate) rotated it.
            self.rollover_at = rotation.next_rollover(now, self.when, self.interval, self.utc)
        return stream

    def _reopen(self) -> None:
        """Close the current file (if any) and open the path; OSError if that fails."""
        stream, self.stream = self.stream, None
        if stream is not None:
            with contextlib.suppress(Exception):
                stream.close()
        try:
            self.stream = self._open()
        except OSError as exc:
            self._fault = exc
            self._retry_at = time.monotonic() + self.RETRY_INTERVAL
            raise

    def _is_open(self) -> bool:
        return self.stream is not None and not self.stream.closed

    def _ready(self) -> int:
        """The descriptor to write to, opening the path again when it must; OSError if it cannot."""
        stream = self.stream
        now = time.monotonic()
        if stream is not None and not stream.closed:
            if now < self._next_check:
                return stream.fileno()
            self._next_check = now + self.CHECK_INTERVAL
            if not self._moved_away(stream.fileno()):
                return stream.fileno()
        elif self._fault is not None and now < self._retry_at:
            raise self._fault.with_traceback(None)
        self._reopen()
        assert self.stream is not None
        return self.stream.fileno()

    def _moved_away(self, fd: int) -> bool:
        """Whether the open file was deleted, or the path now names another file."""
        if os.fstat(fd).st_nlink == 0:
            return True
        try:
            return key_of(self.directory.stat(self._file_name)) != self._key
        except FileNotFoundError:
            return True
        except OSError:
            return False  # the path cannot be looked at; the open file still works

    # -- writing -----------------------------------------------------------------

    def emit(self, record: logging.LogRecord) -> None:
        try:
            data = (self.format(record) + self.terminator).encode(self._codec, self._errors)
        except RecursionError:
            raise
        except Exception:  # noqa: BLE001 - the logging contract: report, never raise
            self.dropped += 1
            self.handleError(record)
            return
        self._last = record
        if self.backupCount > 0 and self._is_open():
            size = self._size + self._pending
            if (self.rollover_at is not None and time.time() >= self.rollover_at) or (
                self.maxBytes > 0 and size and size + len(data) > self.maxBytes
            ):
                self._rotate(record)
        self._lines.append(data)
        self._pending += len(data)
        self.flush()

    def emit_line(self, line: str) -> bool:
        """Write ``line`` (a formatted record) as :meth:`emit` writes a record's line.

        The listener's fast lane, which formats without a ``LogRecord``.
        False (and nothing done) if the line cannot be encoded: the caller
        then hands the record to :meth:`emit`, which counts and reports it.
        """
        return self.write_text(line + self.terminator)

    def write_text(self, text: str) -> bool:
        """Append ``text`` as it is (its own line breaks, or none), rotating as :meth:`emit_line` does.

        False (and nothing done) if it cannot be encoded.
        """
        try:
            data = text.encode(self._codec, self._errors)
        except Exception:  # noqa: BLE001 - emit() does it again, with the record
            return False
        if self.backupCount > 0:
            size = self._size + self._pending
            if (
                (self.rollover_at is not None and time.time() >= self.rollover_at)
                or (self.maxBytes > 0 and size and size + len(data) > self.maxBytes)
            ) and self._is_open():
                self._rotate(self._last or logging.makeLogRecord({"msg": "forklog: a rotation"}))
        self._lines.append(data)
        self._pending += len(data)
        self.flush()
        return True

    def emit_lines(self, lines: List[bytes]) -> int:
        """Write ``lines`` (UTF-8, made by the workers) as :meth:`emit_line` writes each.

        Returns how many could not be written. One block for the whole batch
        when it cannot cross a rotation; line by line (rotating exactly where
        :meth:`emit_line` would) when it may.
        """
        try:
            if self._utf8 and self.terminator == "\n":
                data = b"\n".join(lines) + b"\n"
            else:
                text = self.terminator.join([line.decode("utf-8") for line in lines]) + self.terminator
                data = text.encode(self._codec, self._errors)
        except Exception:  # noqa: BLE001 - a line that cannot be encoded: found below
            data = None
        if data is not None and self.backupCount > 0:
            # Even into an empty file: emit_line() leaves only a lone line over maxBytes there.
            size = self._size + self._pending
            if (self.rollover_at is not None and time.time() >= self.rollover_at) or (
                self.maxBytes > 0 and size + len(data) > self.maxBytes
            ):
                data = None
        if data is None:
            failed = 0
            for line in lines:
                text = line.decode("utf-8", "replace")
                if not self.emit_line(text):
                    failed += 1
                    self.dropped += 1
                    self.handleError(logging.makeLogRecord({"msg": text}))
            return failed
        self._lines.append(data)
        self._pending += len(data)
        self.flush()
        return 0

    def flush(self) -> None:
        with self.lock if self.lock is not None else contextlib.nullcontext():
            self._write_out()

    def _write_out(self) -> None:
        """Write the held lines with one ``write()``; a failure drops them, counted, reported once."""
        lines = self._lines
        if not lines:
            return
        prefix = b""
        done = 0
        try:
            fd = self._ready()
            if self._torn:  # a failed write left a partial line in this file: end it
                prefix = b"\n"
            data = prefix + b"".join(lines)
            view = memoryview(data)
            while done < len(data):
                done += os.write(fd, view[done:])
        except OSError:
            end, kept = len(prefix), 0
            for line in lines:
                if end + len(line) > done:
                    break
                end += len(line)
                kept += 1
            self.dropped += len(lines) - kept
            if done:
                self._size += done
                self._torn = done > end
            self.handleError(self._last or logging.makeLogRecord({"msg": "forklog: a batch"}))
            return
        finally:
            lines.clear()
            self._pending = 0
        self._size += done
        self._torn = False

    # -- rotation ----------------------------------------------------------------

    def _rotate(self, record: logging.LogRecord) -> None:
        now = time.monotonic()
        if now < self._rotate_retry_at:
            return
        self._write_out()  # the lines before the rotation belong to the old file
        try:
            self.doRollover()
        except Exception:  # noqa: BLE001 - the file system, or an app's own rotator: tried again later
            self._rotate_retry_at = now + self.RETRY_INTERVAL
            self.handleError(record)

    def doRollover(self) -> None:
        """Rotate, unless another process sharing the file already did: then reopen."""
        directory, name = self.directory, self._file_name
        with rotation.locked(directory, name + ".lock", self.file_mode):
            stream = self.stream
            mine = os.fstat(stream.fileno()) if stream is not None and not stream.closed else None
            try:
                current: Optional[os.stat_result] = directory.stat(name)
            except FileNotFoundError:
                current = None
            rotated_elsewhere = mine is not None and current is not None and key_of(mine) != key_of(current)
            if current is not None and not rotated_elsewhere and self.backupCount > 0:
                if self.namer is not None or self.rotator is not None:
                    self._rotate_by_path()
                    self._reopen()
                    return
                leftovers = rotation.shift_backups(directory, name, self.backupCount)
                directory.replace(name, name + ".1")
                if self.compress:
                    self._compress(key_of(current), leftovers)
            self._reopen()

    def _rotate_by_path(self) -> None:
        """The app's ``namer``/``rotator`` (the cookbook's gzip), called as ``RotatingFileHandler`` does.

        Set only where the master has the app's functions and the directory
        is its own (forklog._master.customized): they work by path.
        """
        base = self.baseFilename
        for i in range(self.backupCount - 1, 0, -1):
            source, dest = self.rotation_filename(f"{base}.{i}"), self.rotation_filename(f"{base}.{i + 1}")
            if os.path.exists(source):
                if os.path.exists(dest):
                    os.remove(dest)
                os.rename(source, dest)
        dest = self.rotation_filename(base + ".1")
        if os.path.exists(dest):
            os.remove(dest)
        self.rotate(base, dest)

    def _compress(self, key: Key, leftovers: List[str]) -> None:
        if self._compressor is None:
            self._compressor = Compressor(
                self.directory, self._file_name, self.file_mode, self._compress_failed
            )
        self._compressor.submit(key)
        for path in leftovers:  # a compression that never finished (a crash, a close timeout)
            with contextlib.suppress(OSError):
                self._compressor.submit(key_of(self.directory.stat(path)))

    say_failure: Optional[Callable[[str], None]] = None  # a failure losing no record (targets.take_over)

    def _compress_failed(self) -> None:
        """In the compressor thread, within the ``except``: the file is left uncompressed."""
        say = self.say_failure
        if say is not None:
            say("to compress a backup (it stays uncompressed; no record is lost)")
            return
        name = f"forklog: compressing a backup of {self.baseFilename}"
        self.handleError(logging.makeLogRecord({"msg": name, "exc_info": sys.exc_info()}))

    @property
    def compressing(self) -> bool:
        """Whether a rotated file is queued for compression or being compressed."""
        return self._compressor is not None and self._compressor.busy

    def wait_compressed(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the queued compressions; whether they all ended."""
        return self._compressor is None or self._compressor.wait(timeout)

    def close(self) -> None:
        """Write what is held, wait (``close_timeout`` at most) for compressions, close the file."""
        with contextlib.suppress(Exception):
            self.flush()
        if self.wait_compressed(self.close_timeout):
            self.directory.close()  # opened again if the sink is used again
        super().close()


def named_sinks(sinks: Sequence[Sink]) -> List[Tuple[str, logging.Handler]]:
    """Each sink with its name: its own, or its class's; repeats numbered (``file``, ``file-2``)."""
    named: List[Tuple[str, logging.Handler]] = []
    seen: Dict[str, int] = {}
    for sink in sinks:
        if isinstance(sink, tuple):
            name, handler = sink
        else:
            handler = sink
            name = handler.get_name() or type(handler).__name__.lower()
        if not isinstance(handler, logging.Handler):
            raise TypeError(f"forklog.Hub: a sink must be a logging.Handler, got {handler!r}")
        if name in seen:
            seen[name] += 1
            name = f"{name}-{seen[name]}"
        else:
            seen[name] = 1
        named.append((name, handler))
    return named
