"""The files tests/apps/counting_app.py writes per process, as the tests read them.

Importing this changes nothing (importing counting_app wraps the hub's
handler in the importing process: only the gunicorn under test does that).
"""

from __future__ import annotations

import struct
import zlib
from typing import Tuple

#: ``<pid>``: records numbered, drops not reported yet, calls returned.
STATE = struct.Struct("<QQQ")
#: ``<pid>.calls``: one record's identity, the CRC32 and the length of its message.
CALL = struct.Struct("<II")


def identity(message: str) -> Tuple[int, int]:
    """A record's identity in the log file: the CRC32 and the length of its message, UTF-8."""
    data = message.encode("utf-8", "backslashreplace")
    return zlib.crc32(data), len(data)
