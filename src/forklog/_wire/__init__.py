"""The wire between the emitting processes and the master, used by both sides.

* :mod:`~forklog._wire.framing`: the frame format and the pipe;
* :mod:`~forklog._wire.records`: the record codec (a record as plain fields, :mod:`~forklog._wire.fields`),
  with :mod:`~forklog._wire.text` and :mod:`~forklog._wire.truncation` for what an application passes;
* :mod:`~forklog._wire.lines`: a record's lines, made in the emitting process;
* :mod:`~forklog._wire.adopted_lines`: the line of a handler a process adopted;
* :mod:`~forklog._wire.scoreboard`: each writer's count, in shared memory;
* :mod:`~forklog._wire.tracebacks`: an exception's frames, written in the master.
"""

from forklog._wire.fields import EXC_MESSAGE_ATTR, EXC_TYPE_ATTR, FORMAT_VERSION, STANDARD_ATTRS, Exc, Field
from forklog._wire.lines import (
    LINES,
    LINES_HEAD,
    LINES_HEAD_SIZE,
    LinesPayload,
    decode_lines,
    encode_lines,
    lines_fields,
    lines_record,
    traceback_bytes,
)
from forklog._wire.records import (
    decode,
    decode_fields,
    encode,
    exception_text,
    extra_fields,
    fields_of,
    file_names,
    record_from_fields,
)
from forklog._wire.text import cut_text, merged_message, safe_repr, safe_str

__all__ = [
    "EXC_MESSAGE_ATTR",
    "EXC_TYPE_ATTR",
    "FORMAT_VERSION",
    "LINES",
    "LINES_HEAD",
    "LINES_HEAD_SIZE",
    "LinesPayload",
    "STANDARD_ATTRS",
    "Exc",
    "Field",
    "cut_text",
    "decode",
    "decode_fields",
    "decode_lines",
    "encode",
    "encode_lines",
    "exception_text",
    "extra_fields",
    "fields_of",
    "file_names",
    "lines_fields",
    "lines_record",
    "merged_message",
    "record_from_fields",
    "safe_repr",
    "safe_str",
    "traceback_bytes",
]
