"""What the hub says about the records in the log itself: drops, losses, stats.

These go through the sinks as records of the ``forklog`` logger; the hub's
own faults go to stderr instead (:mod:`forklog._stderr`).
"""

from __future__ import annotations

import logging
from typing import Tuple

__all__ = ["own_record"]


def own_record(
    message: str, args: Tuple[object, ...], level: int = logging.WARNING, **fields: object
) -> logging.LogRecord:
    """A record of the hub's own, from the ``forklog`` logger, with ``fields`` as extras."""
    record = logging.LogRecord("forklog", level, __file__, 0, message, args, None)
    record.__dict__.update(fields)
    return record
