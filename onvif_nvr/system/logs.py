"""In-memory system and access logs served by GetSystemLog (bounded, newest kept)."""

from __future__ import annotations

import collections
import datetime
import logging

from onvif_nvr.clock import Clock


def _stamp(wall_ns: int) -> str:
    dt = datetime.datetime.fromtimestamp(wall_ns / 1e9, tz=datetime.UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class LogBuffer:
    def __init__(self, clock: Clock, max_lines: int = 2000) -> None:
        self._clock = clock
        # (wall_ns, text): the time stamp is formatted when the log is read, not per line.
        self._lines: collections.deque[tuple[int, str]] = collections.deque(maxlen=max_lines)

    def add(self, text: str) -> None:
        self._lines.append((self._clock.wall_ns(), text))

    def text(self) -> str:
        return "".join(f"{_stamp(ns)} {line}\n" for ns, line in list(self._lines))

    def clear(self) -> None:
        self._lines.clear()


class BufferHandler(logging.Handler):
    """Copies log records of the ``onvif_nvr`` loggers into a :class:`LogBuffer`."""

    def __init__(self, buffer: LogBuffer, level: int = logging.INFO) -> None:
        super().__init__(level)
        self._buffer = buffer

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._buffer.add(f"{record.levelname} {record.name}: {record.getMessage()}")
        except Exception:  # a log line must never break the caller
            self.handleError(record)
