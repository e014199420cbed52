"""Logs: JSON lines with ISO timestamps off a terminal, library records included."""

import io
import json
import logging

import structlog

from evsed.shell import logs


def test_json_lines_carry_iso_timestamps_and_library_warnings_become_json_too():
    stream = io.StringIO()
    try:
        logs.configure("info", "json", stream=stream)
        structlog.get_logger("evsed").info("contactor.opened", connector=1, reason="test")
        logging.getLogger("pymodbus.logging").warning("Failed to connect %s", "[Errno 111]")
        logs.flush()
        records = [json.loads(line) for line in stream.getvalue().splitlines()]
    finally:  # leave structlog and the root logger as other tests expect them
        logs.flush()
        structlog.reset_defaults()
        logging.getLogger().handlers[:] = []
        logging.getLogger().setLevel(logging.WARNING)
    assert records[0]["event"] == "contactor.opened" and records[0]["timestamp"].endswith("Z")
    assert records[1]["event"] == "library.log" and records[1]["logger"] == "pymodbus.logging"
    assert records[1]["message"] == "Failed to connect [Errno 111]" and records[1]["level"] == "warning"


# --- the journal ----------------------------------------------------------------------------------------------

import os  # noqa: E402
import socket  # noqa: E402
import struct  # noqa: E402


def parse_entry(data: bytes) -> dict[str, str]:
    """The native journal protocol, read the way journald reads it."""
    fields, i = {}, 0
    while i < len(data):
        end = data.index(b"\n", i)
        line = data[i:end]
        if b"=" in line:
            name, _, value = line.partition(b"=")
            i = end + 1
        else:
            name, (size,) = line, struct.unpack("<Q", data[end + 1:end + 9])
            value = data[end + 9:end + 9 + size]
            assert data[end + 9 + size:end + 10 + size] == b"\n"
            i = end + 10 + size
        assert name.decode().isupper() and not name.startswith(b"_")
        fields[name.decode()] = value.decode()
    return fields


def journal(tmp_path, monkeypatch):
    """A fake journald: a datagram socket, and stderr's device and inode in $JOURNAL_STREAM."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "journal.sock"))
    sock.settimeout(5)
    stream = open(tmp_path / "stderr", "w+")
    st = os.fstat(stream.fileno())
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
    return sock, stream


def reset_logging():
    logs.flush()
    structlog.reset_defaults()
    logging.getLogger().handlers[:] = []
    logging.getLogger().setLevel(logging.WARNING)


def test_under_systemd_events_go_to_the_journal_as_fields(tmp_path, monkeypatch):
    sock, stream = journal(tmp_path, monkeypatch)
    try:
        logs.configure("info", "auto", stream=stream, journal_socket=str(tmp_path / "journal.sock"))
        log = structlog.get_logger("evsed")
        log.info("contactor.opened", connector=1, reason="ev_unplugged", current_a=[16.0, 15.9, 16.1])
        log.critical("safety.unhealthy", reason="task pilot-1 ended\nTraceback ...", message="not a MESSAGE")
        first, second = parse_entry(sock.recv(65536)), parse_entry(sock.recv(65536))
    finally:
        reset_logging()
        sock.close()
    assert first == {"MESSAGE": "contactor.opened", "PRIORITY": "6", "SYSLOG_IDENTIFIER": "evsed",
                     "CONNECTOR": "1", "REASON": "ev_unplugged", "CURRENT_A": "[16.0, 15.9, 16.1]"}
    assert second["MESSAGE"] == "safety.unhealthy" and second["PRIORITY"] == "2"
    assert second["REASON"] == "task pilot-1 ended\nTraceback ..."  # newlines survive, length-prefixed
    assert second["EVSED_MESSAGE"] == "not a MESSAGE"
    assert stream.read() == ""  # nothing doubled on stderr


def test_without_the_journal_socket_it_falls_back_to_json_lines(tmp_path, monkeypatch):
    sock, stream = journal(tmp_path, monkeypatch)
    sock.close()
    os.unlink(tmp_path / "journal.sock")
    try:
        logs.configure("info", "auto", stream=stream, journal_socket=str(tmp_path / "journal.sock"))
        structlog.get_logger("evsed").info("contactor.opened", connector=1)
        logs.flush()
    finally:
        reset_logging()
    stream.seek(0)
    assert json.loads(stream.readline())["connector"] == 1


def test_a_stderr_that_is_not_the_journals_stream_gets_json_lines(tmp_path, monkeypatch):
    sock, stream = journal(tmp_path, monkeypatch)
    monkeypatch.setenv("JOURNAL_STREAM", "1:2")  # a parent's journal stream, not ours
    try:
        logs.configure("info", "auto", stream=stream, journal_socket=str(tmp_path / "journal.sock"))
        structlog.get_logger("evsed").info("contactor.opened", connector=1)
        logs.flush()
    finally:
        reset_logging()
        sock.close()
    stream.seek(0)
    assert json.loads(stream.readline())["event"] == "contactor.opened"


def test_field_names_are_what_journalctl_can_match():
    entry = parse_entry(logs.journal_entry({"event": "x", "level": "warning", "timestamp": "t", "9lives": True,
                                            "id-tag": "04A1", "_private": None}))
    assert entry == {"MESSAGE": "x", "PRIORITY": "4", "SYSLOG_IDENTIFIER": "evsed", "F9LIVES": "true",
                     "ID_TAG": "04A1", "F_PRIVATE": "null"}


def test_a_library_dumping_a_multi_line_frame_at_error_level_gives_one_line_and_the_frame_at_debug():
    stream = io.StringIO()
    frame = "Exception response 0x83\n  0x1 0x83 0x2 0xc0 0xf1\n  recv: 0x1 0x83 0x2"
    try:
        logs.configure("info", "json", stream=stream)
        logging.getLogger("pymodbus.logging").error(frame)
        logs.flush()
        records = [json.loads(line) for line in stream.getvalue().splitlines()]
    finally:
        logs.flush()
        structlog.reset_defaults()
        logging.getLogger().handlers[:] = []
        logging.getLogger().setLevel(logging.WARNING)
    assert len(records) == 1  # the frame itself is at debug, below the configured level
    assert records[0]["level"] == "error" and records[0]["message"] == "Exception response 0x83"


class _StuckStream:
    """stderr that takes nothing until released (a journal that stopped reading)."""

    def __init__(self):
        import threading
        self.released = threading.Event()
        self.lines: list[str] = []

    def write(self, text: str) -> None:
        self.released.wait()
        self.lines.append(text)

    def flush(self) -> None:
        pass


def test_a_sink_that_takes_nothing_costs_a_bounded_queue_and_the_lines_dropped_are_said(monkeypatch):
    monkeypatch.setattr(logs, "MAX_QUEUED", 50)
    stuck = _StuckStream()
    writer = logs._QueuedWriter(stuck)
    for n in range(200):
        writer.write(f"line {n}\n")
    queued, dropped = writer._queue.qsize(), writer.dropped
    assert queued == 50 and queued + dropped + 1 >= 200  # one may sit in the blocked write
    stuck.released.set()
    writer.close()  # drains what waits
    said = [json.loads(line) for line in stuck.lines if line.startswith("{")]
    assert [(e["event"], e["lines"]) for e in said] == [("log.dropped", dropped)]  # said once, counted
    kept = [line for line in stuck.lines if not line.startswith("{")]
    assert len(kept) == 200 - dropped and kept == [f"line {n}\n" for n in range(len(kept))]  # the oldest kept
