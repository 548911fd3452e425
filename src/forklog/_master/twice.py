"""One file, two handlers with other settings: the master's rule, and how it says it (issue 22, item 4).

The master keeps one sink per file. When a second handler names a file
already open with other settings (a ``FileHandler`` and a
``RotatingFileHandler(maxBytes=20000)`` on one path, say), the result must
not depend on which handler wrote first, and must be said. The rule:

* **size rotation wins**: a file any of its handlers rotates by size is
  rotated by size, with that handler's ``maxBytes`` and ``backupCount``
  (the first such handler's, if two differ); a plain or watched file's sink
  takes them on;
* otherwise the first configuration stays (a timed rotation and a size
  rotation of one file, two encodings): its sink is already writing.

Either way one line on stderr names both configurations and what is done,
once per file; ``python -m forklog check`` says the same before the start.
"""

from __future__ import annotations

import logging
from typing import Optional, Tuple

from forklog._master.sinks import RotatingFileSink
from forklog._wire.adopted_lines import TargetSpec

__all__ = ["describe", "merge"]


def describe(spec: TargetSpec) -> str:
    """A target's settings, as a handler names them."""
    if spec.kind == "rotating":
        text = f"RotatingFileHandler(maxBytes={spec.max_bytes}, backupCount={spec.backup_count})"
    elif spec.kind == "timed":
        text = (
            f"TimedRotatingFileHandler(when={spec.when!r}, interval={spec.interval}, "
            f"backupCount={spec.backup_count})"
        )
    elif spec.kind == "watched":
        text = "WatchedFileHandler"
    else:
        text = "FileHandler"
    if spec.encoding not in (None, "locale"):
        text += f" encoding={spec.encoding}"
    return text


def merge(
    first: TargetSpec, second: TargetSpec, sink: Optional[logging.Handler]
) -> Tuple[TargetSpec, Optional[str]]:
    """The settings the file keeps when ``second`` names it too, and what to say (None: the same settings).

    ``sink`` is the file's open sink, if any: it takes on a size rotation.
    """
    if _settings(first) == _settings(second):
        return first, None
    kept = first
    if second.kind == "rotating" and first.kind in ("file", "watched", "rotating") and first.max_bytes <= 0:
        kept = first._replace(kind="rotating", max_bytes=second.max_bytes, backup_count=second.backup_count)
        if isinstance(sink, RotatingFileSink):
            sink.maxBytes, sink.backupCount = second.max_bytes, second.backup_count
    said = (
        f"forklog: {first.path} is configured by two handlers, {describe(first)} and {describe(second)}; "
        f"the master writes it once, as {describe(kept)} (a size rotation wins, otherwise the first)"
    )
    return kept, said


def _settings(spec: TargetSpec) -> Tuple[object, ...]:
    return spec._replace(mode="a")[:]
