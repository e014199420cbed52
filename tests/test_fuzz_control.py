"""The control socket under hypothesis: any bytes, any JSON, any command with any arguments, sent to
a real daemon whose simulated EV is plugged in. Nothing crashes it, every well-formed line gets a
reply, and the contactor never closes without an authorized card; then a known card closes it,
so the check could have failed."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from evsed import protocol as p
from evsed import config
from evsed.control import client as control

ROOT = Path(__file__).parent.parent
CARDS = {"04A1B2C3", "04D4E5F6"}  # the simulator config's enabled cards: only these authorize
COMMANDS = ["status", "ping", "hello", "subscribe", "sim", "plug", "unplug", "tap", "ev", "fault", "clear-fault",
            "clear-faults", "remote-start", "remote-stop", "set-limit", "reserve", "cancel-reservation",
            "availability", "mode", "unlock", "ack", "authorize", "", "__class__", "_hello", "../status"]
KEYS = ["cmd", "connector", "card", "id_tag", "kind", "clear", "max_current_a", "phases", "reason", "action",
        "after", "version", "service", "limit_a", "seq", "ventilation", "asleep", "expires", "id"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True) | st.text(max_size=20)
    | st.sampled_from(["04a1b2c3", "0A0B0C0D", "FREEVEND", "rcd", "pilot_lost", "A", "1", "-1", "0"]),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8)


def _not_a_card(value) -> bool:
    return not (isinstance(value, str) and value.replace(":", "").upper() in CARDS)


requests = st.fixed_dictionaries({"cmd": st.sampled_from(COMMANDS) | st.text(max_size=12)}).flatmap(
    lambda base: st.dictionaries(st.sampled_from(KEYS[1:]), json_values.filter(_not_a_card), max_size=5).map(
        lambda rest: {**base, **rest}))
lines = st.one_of(
    requests.map(lambda r: json.dumps(r).encode()),
    st.binary(max_size=200).map(lambda b: b.replace(b"\n", b"")),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.just(b"{" * 5000 + b"}" * 5000),
    st.just(b'{"cmd": "status", "pad": "' + b"x" * 70_000 + b'"}'),  # over the request size limit
)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    text = (ROOT / "config/simulator.toml").read_text()
    text += f'\n[store]\nstate_dir = "{tmp / "state"}"\nruntime_dir = "{tmp / "run"}"\n'
    (tmp / "evsed.toml").write_text(text)
    cfg = config.load(tmp / "evsed.toml")
    proc = subprocess.Popen([sys.executable, "-m", "evsed", "run", "-c", str(tmp / "evsed.toml")],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    for line in proc.stderr:  # type: ignore[union-attr]
        if json.loads(line)["event"] == "daemon.ready":
            break
    else:
        raise AssertionError(f"daemon did not start: {proc.wait()}")
    drain = subprocess.Popen(["cat"], stdin=proc.stderr, stdout=subprocess.DEVNULL)  # keep its log flowing
    yield proc, cfg
    proc.terminate()
    assert proc.wait(10) == 0
    drain.wait(5)


def exchange(path: Path, payload: list[bytes]) -> list[dict]:
    """Send the lines on one connection and read what comes back until the daemon is quiet."""
    replies = []
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(2.0)
        sock.connect(str(path))
        try:
            sock.sendall(b"".join(line + b"\n" for line in payload))
            sock.shutdown(socket.SHUT_WR)
            buf = b""
            while chunk := sock.recv(65536):
                buf += chunk
        except (BrokenPipeError, ConnectionResetError, TimeoutError):  # dropped for an oversized line,
            return replies                                           # or a stream that does not end
    for line in buf.splitlines():
        replies.append(json.loads(line))
    return replies


def contactors(cfg) -> list[str]:
    return [c.contactor for c in control.ask(cfg.store.runtime_dir, p.Status()).connectors]


def test_no_request_crashes_the_daemon_or_closes_the_contactor_without_a_card(daemon):
    proc, cfg = daemon
    path = control.socket_path(cfg.store.runtime_dir)

    @settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                     HealthCheck.data_too_large], deadline=None,
              max_examples=min(settings().max_examples, 300))  # each runs against the live daemon
    @given(st.lists(lines, min_size=1, max_size=5))
    def one(payload):
        control.request(cfg.store.runtime_dir, p.Plug(connector=1))
        replies = exchange(path, payload)
        assert all(isinstance(r, dict) for r in replies)
        assert proc.poll() is None, "the daemon died"
        assert contactors(cfg) == ["open"], f"closed after {payload!r}"

    one()
    # The check above can fail: a known card does close it.
    control.request(cfg.store.runtime_dir, p.ClearFaults(connector=1))
    control.request(cfg.store.runtime_dir, p.Unplug(connector=1))
    control.request(cfg.store.runtime_dir, p.SetEv(connector=1, max_current_a=16, asleep=False, wants_energy=True,
                                                   ignore_stop=False, obey_pwm=True, ventilation=False))
    control.request(cfg.store.runtime_dir, p.Plug(connector=1))
    control.request(cfg.store.runtime_dir, p.Tap(card="04A1B2C3", connector=1))
    deadline = time.monotonic() + 10
    while contactors(cfg) != ["closed"]:
        assert time.monotonic() < deadline, control.request(cfg.store.runtime_dir, p.Status())
        time.sleep(0.05)
