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
