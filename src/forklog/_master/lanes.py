"""The listener's fast lanes: a sink's line made straight from the decoded fields.

For a file or stream sink with no filters and a formatter forklog can
reproduce (:func:`forklog._renderers.line_renderer`), the listener writes
the line without making a ``LogRecord``; a buffered sink's lane only
refuses early, counting the drop from the fields when its buffer is full.
A lane returns None when it wrote the line, :data:`NOT_WRITTEN` when the
sink could not write it (and counted that), or what to call with the record
instead (the sink's ``emit``, or its ``handleError``).

A lane of :class:`~forklog._master.line_writer.LineWriter` takes the line
the emitting process made instead of the fields.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Dict, Optional, Tuple

from forklog import _renderers
from forklog._master.buffered import BufferedSink
from forklog._master.sinks import RotatingFileSink
from forklog._wire import Field

__all__ = ["NOT_WRITTEN", "FastLanes", "Lane", "buffered_lane", "down_lane"]

LEVELNAME = Field.LEVELNAME

#: A sink's lane: given the fields (or the lines), the writer's pid and the
#: exception's text, writes the sink's line (see the module).
Lane = Callable[[Any, int, Any], Optional[Callable[[logging.LogRecord], Any]]]


def NOT_WRITTEN(record: logging.LogRecord) -> None:
    """What a lane returns when its sink could not write the line and counted it."""


_STREAM_EMITS = (logging.StreamHandler.emit, logging.FileHandler.emit)


class FastLanes:
    """Makes each sink's lane, keeping the renderers made for the formatters."""

    def __init__(self) -> None:
        self._renderers: Dict[int, Tuple[Tuple[Any, ...], Optional[_renderers.Renderer]]] = {}

    def renderer(self, formatter: logging.Formatter) -> Optional[_renderers.Renderer]:
        key = _renderers.renderer_key(formatter)
        cached = self._renderers.get(id(formatter))
        if cached is not None and cached[0] == key:
            return cached[1]
        try:
            renderer = _renderers.line_renderer(formatter)
        except Exception:  # noqa: BLE001 - a formatter set up in a way not foreseen: the slow path
            renderer = None
        if len(self._renderers) > 64:
            self._renderers.clear()
        self._renderers[id(formatter)] = (key, renderer)
        return renderer

    def lane(self, sink: logging.Handler) -> Optional[Lane]:
        """``sink``'s fast lane, if it is a file or stream sink whose line the fields make alike.

        A buffered sink's lane only refuses early: when its buffer is full
        (its server is down), the drop is counted from the fields, without
        making the LogRecord it would not keep.
        """
        kind = type(sink)
        patched = "emit" in sink.__dict__ or "format" in sink.__dict__ or "emit_line" in sink.__dict__
        if sink.filters or kind.format is not logging.Handler.format or patched:
            return None
        if isinstance(sink, BufferedSink):
            return buffered_lane(sink)
        render = self.renderer(sink.formatter or logging._defaultFormatter)  # type: ignore[attr-defined]
        if render is None:
            return None
        emit = sink.emit
        if kind.emit is RotatingFileSink.emit and kind.emit_line is RotatingFileSink.emit_line:  # type: ignore[attr-defined]
            emit_line = sink.emit_line  # type: ignore[attr-defined]

            def file_lane(fields: Tuple[Any, ...], pid: int, exc_text: Any) -> Optional[Callable[..., Any]]:
                try:
                    line = render(fields, pid, exc_text)
                except Exception:  # noqa: BLE001 - emit() formats again, and counts and reports it
                    return emit
                return None if emit_line(line) else emit

            return file_lane
        if kind.emit in _STREAM_EMITS:
            stream_sink: logging.StreamHandler[Any] = sink  # type: ignore[assignment]

            def stream_lane(fields: Tuple[Any, ...], pid: int, exc_text: Any) -> Optional[Callable[..., Any]]:
                # StreamHandler.emit, given the line.
                stream = stream_sink.stream
                if stream is None:
                    return emit  # a FileHandler that opens its file on the first record
                try:
                    line = render(fields, pid, exc_text)
                except Exception:  # noqa: BLE001
                    return emit
                try:
                    stream.write(line + stream_sink.terminator)
                    stream_sink.flush()
                except RecursionError:
                    raise
                except Exception:  # noqa: BLE001 - as emit() does
                    return stream_sink.handleError
                return None

            return stream_lane
        return None


def down_lane(refuse: Callable[[Tuple[str, int]], None]) -> Lane:
    def down_lane(fields: Tuple[Any, ...], pid: int, exc_text: Any) -> Optional[Callable[..., Any]]:
        refuse((fields[LEVELNAME], pid))
        return None

    return down_lane


def buffered_lane(sink: BufferedSink) -> Lane:
    refuse, emit = sink.refuse, sink.emit

    def buffered_lane(fields: Tuple[Any, ...], pid: int, exc_text: Any) -> Optional[Callable[..., Any]]:
        return None if refuse(fields[LEVELNAME], pid) else emit

    return buffered_lane
