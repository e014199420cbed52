"""structlog set-up: JSON lines off a terminal, readable text on one, written off the loop.

Rendering happens in the caller (cheap); the write to stderr happens in a thread, so a
slow journal or terminal never delays the safety path.
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
from typing import TextIO

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR,
           "critical": logging.CRITICAL}


class _QueuedWriter:
    """A file-like sink whose writes are queued and done by one background thread."""

    def __init__(self, stream: TextIO):
        self.stream = stream
        self._queue: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="evsed-log", daemon=True)
        self._thread.start()

    def write(self, text: str) -> None:
        self._queue.put(text)

    def flush(self) -> None:
        pass

    def _run(self) -> None:
        while (text := self._queue.get()) is not None:
            try:
                self.stream.write(text)
                self.stream.flush()
            except (OSError, ValueError):
                pass  # a closed or broken stderr must not take the daemon down

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(2.0)


_writer: _QueuedWriter | None = None
LIBRARY_LINE_MAX = 200  # characters of a library's message at its own level; the rest at debug


class _ToStructlog(logging.Handler):
    """Libraries log through the standard logging module (pymodbus, gpiozero): their records go
    through structlog too, so the journal stays one JSON object per line."""

    def emit(self, record: logging.LogRecord) -> None:
        """One line per record; a multi-line or long message (pymodbus dumps raw frames at error
        level) keeps its first line at the record's level and goes whole at debug."""
        try:
            log = structlog.get_logger("evsed")
            message = record.getMessage()
            first = message.split("\n", 1)[0].strip()
            short = first if len(first) <= LIBRARY_LINE_MAX else first[:LIBRARY_LINE_MAX] + "..."
            log.log(record.levelno, "library.log", logger=record.name, message=short)
            if short != message:
                log.debug("library.log_detail", logger=record.name, message=message)
        except Exception:  # noqa: BLE001 - logging must never raise into the caller
            self.handleError(record)


def configure(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Configure structlog once per process. fmt: auto, text or json."""
    global _writer
    stream = stream or sys.stderr
    if fmt == "auto":
        fmt = "text" if stream.isatty() else "json"
    if _writer is not None:
        _writer.close()
    _writer = _QueuedWriter(stream)
    renderer = (structlog.dev.ConsoleRenderer(colors=stream.isatty())
                if fmt == "text" else structlog.processors.JSONRenderer())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(file=_writer),  # type: ignore[arg-type]  # write() is all it uses
        cache_logger_on_first_use=True,
    )
    root = logging.getLogger()
    root.handlers[:] = [_ToStructlog()]
    root.setLevel(max(_LEVELS[level], logging.WARNING))  # libraries: warnings and worse


def flush() -> None:
    """Write out everything logged so far (at exit)."""
    global _writer
    if _writer is not None:
        _writer.close()
        _writer = None
