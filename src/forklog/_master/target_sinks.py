"""The master's sink for an adopted target: a file (size, time or no rotation) or its own stdout/stderr.

Made by :class:`forklog._master.targets.Targets` the first time a target's
line arrives (or the master's own configuration names it).
"""

from __future__ import annotations

import codecs
import contextlib
import datetime
import logging
import logging.handlers
import os
import sys
from typing import Any, Callable, Optional, Tuple, Union

from forklog._master.log_directory import LogDirectory
from forklog._master.sinks import RotatingFileSink
from forklog._wire.adopted_lines import TargetLine, TargetSpec, text_encoding

__all__ = ["make_sink"]


class _TimedFile(logging.handlers.TimedRotatingFileHandler):
    """The stdlib's timed rotation, its file opened and renamed in a held directory, no link followed."""

    def __init__(self, directory: LogDirectory, file_mode: int, *args: Any) -> None:
        self.directory, self.file_mode = directory, file_mode
        super().__init__(*args)

    def _open(self) -> Any:
        fd = self.directory.open(
            os.path.basename(self.baseFilename), os.O_WRONLY | os.O_APPEND | os.O_CREAT, self.file_mode
        )
        return os.fdopen(fd, "a", encoding=self.encoding, errors=self.errors)

    def rotate(self, source: str, dest: str) -> None:
        if callable(self.rotator) or os.path.dirname(source) != os.path.dirname(dest):
            super().rotate(source, dest)
            return
        with contextlib.suppress(FileNotFoundError):  # as the stdlib: nothing to rotate
            self.directory.replace(os.path.basename(source), os.path.basename(dest))


def _standard(name: str) -> Tuple[int, str]:
    """The master's own stdout or stderr: its descriptor and its encoding (UTF-8 when it has none)."""
    standard = sys.stdout if name == "stdout" else sys.stderr
    fd = 1 if name == "stdout" else 2
    with contextlib.suppress(Exception):  # replaced by an object without a descriptor
        fd = standard.fileno()
    encoding = getattr(standard, "encoding", None)
    try:
        return fd, codecs.lookup(encoding).name if isinstance(encoding, str) else "utf-8"
    except LookupError:
        return fd, "utf-8"


def make_sink(
    spec: TargetSpec, file_mode: int, directory: Optional[LogDirectory]
) -> Tuple[logging.Handler, Callable[[TargetLine], bool]]:
    """The sink for ``spec``, and how a line is written to it.

    A file is created with ``file_mode`` and opened relative to ``directory``
    when the owner's configuration named it (held since then), never through
    a link (:mod:`forklog._master.log_directory`).
    """
    errors = spec.errors or "backslashreplace"  # a lone surrogate is written escaped, not lost
    # A file's encoding by its stdlib name (checked by TargetSpec.check), never the
    # name as sent: the codec registry keeps every name it is asked for.
    encoding = text_encoding(spec.encoding) if spec.encoding is not None else None
    if spec.kind in ("file", "rotating", "watched"):
        # forklog's file sink: size rotation like RotatingFileHandler's; it
        # also notices a moved or deleted file, as WatchedFileHandler does.
        mode: Union[int, str] = "w" if spec.mode == "w" and spec.max_bytes <= 0 else file_mode
        sink = RotatingFileSink(spec.path, mode, spec.max_bytes, spec.backup_count, encoding, True, errors)
        sink.file_mode = file_mode
        if directory is not None:
            sink.directory = directory
        with contextlib.suppress(OSError):  # opened now (the first batch rotates at maxBytes too)
            sink._reopen()  # or counted, reported and tried again as records come
        sink.terminator = ""
        emit_line = sink.emit_line
        return sink, lambda line: emit_line(line.text)
    message_only = logging.Formatter("%(message)s")
    if spec.kind == "timed":
        at = spec.at_time
        at_time = None if at is None else datetime.time(at // 3600, at // 60 % 60, at % 60)
        handler: logging.StreamHandler = _TimedFile(  # type: ignore[type-arg]
            directory or LogDirectory(os.path.dirname(spec.path), file_mode),
            file_mode,
            spec.path,
            spec.when,
            spec.interval,
            spec.backup_count,
            encoding,
            True,
            spec.utc,
            at_time,
            errors,
        )
    else:
        # The master's stdout or stderr, through a descriptor of this sink's
        # own: a child forked mid-batch lets go of it (release_descriptors)
        # and never flushes what the sink buffered into the process's stream.
        # Shared by every writer: written with the master's settings, never a spec's.
        fd, encoding = _standard(spec.path)
        stream = open(  # noqa: SIM115 - closed with the sink
            os.dup(fd), "w", encoding=encoding, errors="backslashreplace", closefd=True
        )
        handler = logging.StreamHandler(stream)
    handler.setFormatter(message_only)
    handler.terminator = ""
    emit = handler.emit

    def write(line: TargetLine) -> bool:
        record = logging.LogRecord("forklog.target", line.levelno, "", 0, line.text, None, None)
        emit(record)
        return True

    return handler, write
