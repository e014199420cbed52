"""structlog set-up: the journal's native fields under systemd, JSON lines off a terminal,
readable text on one, all written off the loop.

Rendering happens in the caller (cheap); the write happens in a thread, so a slow journal
or terminal never delays the safety path.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import re
import socket
import struct
import sys
import threading
from typing import Any, TextIO

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR,
           "critical": logging.CRITICAL}


MAX_QUEUED = 10_000  # log lines waiting for a slow journal or stderr; past that they are counted, not kept


class _Bounded:
    """A queue of log lines with a bound: a journal or stderr that stops taking them costs at
    most MAX_QUEUED lines of memory; the lines dropped meanwhile are counted and said once
    the sink takes lines again."""

    def __init__(self) -> None:
        self._queue: queue.Queue[Any] = queue.Queue(MAX_QUEUED)
        self.dropped = 0  # written by the logging threads, read and reset by the writer's

    def offer(self, item: Any) -> None:
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self.dropped += 1

    def take(self) -> tuple[Any, int]:
        """The next item, and how many were dropped before it (said before it, then reset)."""
        item = self._queue.get()
        dropped, self.dropped = self.dropped, 0
        return item, dropped

    def stop(self) -> None:
        with contextlib.suppress(queue.Full):  # a sink stuck for good: its thread dies with the process
            self._queue.put(None, timeout=2.0)


def _dropped_line(dropped: int) -> dict[str, Any]:
    return {"event": "log.dropped", "level": "warning", "lines": dropped,
            "why": f"the log sink took no lines while {MAX_QUEUED} waited"}


class _QueuedWriter(_Bounded):
    """A file-like sink whose writes are queued and done by one background thread."""

    def __init__(self, stream: TextIO):
        super().__init__()
        self.stream = stream
        self._thread = threading.Thread(target=self._run, name="evsed-log", daemon=True)
        self._thread.start()

    def write(self, text: str) -> None:
        self.offer(text)

    def flush(self) -> None:
        pass

    def _run(self) -> None:
        while True:
            text, dropped = self.take()
            if text is None:
                return
            try:
                if dropped:
                    self.stream.write(json.dumps(_dropped_line(dropped)) + "\n")
                self.stream.write(text)
                self.stream.flush()
            except (OSError, ValueError):
                pass  # a closed or broken stderr must not take the daemon down

    def close(self) -> None:
        self.stop()
        self._thread.join(2.0)


JOURNAL_SOCKET = "/run/systemd/journal/socket"
_PRIORITY = {"debug": 7, "info": 6, "warning": 4, "error": 3, "critical": 2, "exception": 3}


def _field_name(key: str) -> str:
    """A journal field name: upper case, digits and underscores, not leading with either."""
    name = re.sub(r"[^A-Z0-9_]", "_", key.upper())[:64]
    return name if name[:1].isalpha() else f"F{name}"[:64]


def journal_entry(event: dict[str, Any]) -> bytes:
    """One entry in the native journal protocol: the event name as MESSAGE, the level as
    PRIORITY, every other key as an upper-case field (strings as they are, the rest as JSON)."""
    fields: dict[str, str] = {"MESSAGE": str(event.pop("event", "")),
                              "PRIORITY": str(_PRIORITY.get(str(event.pop("level", "info")), 6)),
                              "SYSLOG_IDENTIFIER": "evsed"}
    event.pop("timestamp", None)  # the journal stamps every entry itself
    for key, value in event.items():
        name = _field_name(str(key))
        if name in ("MESSAGE", "PRIORITY", "SYSLOG_IDENTIFIER"):
            name = f"EVSED_{name}"
        fields[name] = value if isinstance(value, str) else json.dumps(value, default=str)
    out = bytearray()
    for name, value in fields.items():
        data = value.encode("utf-8", "replace")
        if b"\n" in data:  # the length-prefixed form carries any bytes
            out += name.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
        else:
            out += name.encode() + b"=" + data + b"\n"
    return bytes(out)


class _JournalWriter(_Bounded):
    """Entries sent to the journal's datagram socket by one background thread."""

    def __init__(self, address: str, fallback: TextIO):
        super().__init__()
        self.address, self.fallback = address, fallback
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.connect(address)  # fails (OSError) without a journal: configure() falls back
        self._thread = threading.Thread(target=self._run, name="evsed-journal", daemon=True)
        self._thread.start()

    def put(self, entry: bytes) -> None:
        self.offer(entry)

    def _run(self) -> None:
        while True:
            entry, dropped = self.take()
            if entry is None:
                return
            try:
                if dropped:
                    self.sock.send(journal_entry(_dropped_line(dropped)))
                self.sock.send(entry)
            except OSError as exc:  # too large, or the journal went away: say so where we can
                try:
                    self.fallback.write(json.dumps({"event": "log.journal_failed", "error": str(exc),
                                                    "entry": entry[:2000].decode("utf-8", "replace")}) + "\n")
                    self.fallback.flush()
                except (OSError, ValueError):
                    pass

    def close(self) -> None:
        self.stop()
        self._thread.join(2.0)
        self.sock.close()


class _JournalLogger:
    """structlog's final logger under systemd: takes the event dict the chain leaves."""

    def __init__(self, writer: _JournalWriter):
        self.writer = writer

    def msg(self, **event: Any) -> None:  # structlog passes a dict left by the chain as keywords
        self.writer.put(journal_entry(event))

    debug = info = warning = warn = error = critical = exception = fatal = log = msg


def _journal_stream(stream: TextIO) -> bool:
    """Whether `stream` is the journal's stream connection, as systemd says in $JOURNAL_STREAM."""
    dev, _, ino = os.environ.get("JOURNAL_STREAM", "").partition(":")
    try:
        st = os.fstat(stream.fileno())
        return (st.st_dev, st.st_ino) == (int(dev), int(ino))
    except (OSError, ValueError, AttributeError):  # no file descriptor, or no such variable
        return False


_writer: _QueuedWriter | _JournalWriter | None = None
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


def configure(level: str = "info", fmt: str = "auto", stream: TextIO | None = None,
              journal_socket: str = JOURNAL_SOCKET, cache: bool = True) -> None:
    """Configure structlog once per process. fmt: auto, text or json; auto means the journal's
    native fields when stderr is the journal's stream, text on a terminal, else JSON lines.
    cache: loggers keep this configuration from their first use on (fast); a test that
    configures and then resets passes False, so no logger keeps its stream afterwards."""
    global _writer
    stream = stream or sys.stderr
    if _writer is not None:
        _writer.close()
        _writer = None
    if fmt == "auto" and _journal_stream(stream):
        try:
            _writer = _JournalWriter(journal_socket, stream)
            fmt = "journal"
        except OSError:  # the stream is the journal's but its socket is not there: JSON lines then
            fmt = "json"
    if fmt == "auto":
        fmt = "text" if stream.isatty() else "json"
    renderer: Any = (structlog.dev.ConsoleRenderer(colors=stream.isatty()) if fmt == "text" else
                     structlog.processors.JSONRenderer() if fmt == "json" else (lambda _l, _m, event: event))
    if not isinstance(_writer, _JournalWriter):
        _writer = _QueuedWriter(stream)
    factory: Any = ((lambda *_args, w=_writer: _JournalLogger(w)) if isinstance(_writer, _JournalWriter)
                    else structlog.PrintLoggerFactory(file=_writer))  # type: ignore[arg-type]  # only write()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=factory,
        cache_logger_on_first_use=cache,
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
