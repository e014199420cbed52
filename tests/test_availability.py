"""Availability kept in the state directory (evsed/shell/availability.py): the rules of a change
and a file that cannot be read (the end-to-end rows are in test_ocpp_daemon.py)."""

from __future__ import annotations

import structlog

from evsed.shell import availability


def test_connector_0_takes_every_connector_and_one_made_operative_makes_the_charger_operative():
    everything = availability.change(frozenset(), 0, False, [1, 2])
    assert everything == {0, 1, 2}
    assert availability.change(everything, 1, True, [1, 2]) == {2}
    assert availability.change(frozenset({2}), 1, False, [1, 2]) == {1, 2}
    assert availability.change(everything, 0, True, [1, 2]) == frozenset()


def test_a_kept_set_is_read_back_and_a_garbled_file_is_said_and_leaves_every_connector_available(tmp_path):
    availability.save(tmp_path, frozenset({0, 1}))
    assert availability.load(tmp_path) == {0, 1}
    (tmp_path / availability.FILE).write_text('{"inoperative": [1, "two"]}')
    with structlog.testing.capture_logs() as logs:
        assert availability.load(tmp_path) == frozenset()
    (said,) = [e for e in logs if e["event"] == "availability.unreadable"]
    assert said["file"] == str(tmp_path / availability.FILE) and "inoperative" in said["error"]
