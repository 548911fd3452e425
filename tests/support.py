"""Helpers shared by the tests."""

from __future__ import annotations

import logging
import threading
from typing import List


class Collect(logging.Handler):
    """A sink that keeps every record it is given (in the hub's process)."""

    def __init__(self, level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self.records: List[logging.LogRecord] = []
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.seen.set()

    def messages(self) -> List[str]:
        return [r.getMessage() for r in self.records]
