"""The control socket's contract (evsed/protocol.py): every record bounded and within the size caps,
its JSON form read back as it was, bad input refused with the field named, the durable events
decided by their records, and docs/protocol.md written from them."""

import json
import math
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from evsed import protocol as p
from evsed import protocol_doc, wire
from evsed.shell.bus import ChargerEvent

ROOT = Path(__file__).parent.parent
REPLIES = sorted({c.REPLY for c in p.COMMANDS.values()} | {p.Failure, p.AuthorizeRequest}, key=lambda c: c.__name__)


def test_docs_protocol_md_is_written_from_the_records():
    doc = (ROOT / "docs" / "protocol.md").read_text()
    assert protocol_doc.BEGIN in doc and protocol_doc.END in doc
    assert protocol_doc.rewrite(doc) == doc, "run: python -m evsed.protocol_doc --write"


@pytest.mark.parametrize("name", sorted(p.COMMANDS))
def test_the_largest_valid_request_fits_the_request_cap_and_reads_back(name):
    command = p.largest(p.COMMANDS[name])
    line = p.encode_line(command.to_wire())
    assert len(line) <= p.MAX_REQUEST
    assert p.parse_request(p.decode_line(line)) == command


@pytest.mark.parametrize("cls", REPLIES, ids=lambda c: c.__name__)
def test_the_largest_valid_reply_fits_the_reply_cap_and_reads_back(cls):
    reply = p.largest(cls)
    line = p.encode_line(reply.to_wire())
    assert len(line) <= p.MAX_REPLY, (cls.__name__, len(line))
    assert type(reply).from_wire(p.decode_line(line)) == reply


@pytest.mark.parametrize("kind", sorted(p.EVENTS))
def test_the_largest_valid_event_fits_the_cap_and_reads_back(kind):
    event = p.largest(p.EVENTS[kind])
    line = p.encode_line(event.to_wire())
    assert len(line) <= p.MAX_REPLY
    assert p.parse_event(p.decode_line(line)) == event


def test_a_status_reply_is_read_with_its_own_module_alone_and_without_typing():
    # The CLI's `evsed status` reads it so (typing costs it 4 ms to import): the largest valid
    # reply, so that every field's converter reads it; the same record as the whole protocol reads.
    import subprocess
    import sys
    reply = p.largest(p.StatusReply)
    code = ("import sys; from evsed import wire; from evsed.protocol_status import Status\n"
            "reply = Status().reply(wire.decode_line(sys.stdin.buffer.read()))\n"
            "print(repr(reply)); print(sorted(m for m in sys.modules if m in ('typing', 'evsed.protocol')))")
    proc = subprocess.run([sys.executable, "-c", code], input=p.encode_line(reply.to_wire()), capture_output=True,
                          check=True)
    shown, imported = proc.stdout.decode().splitlines()
    assert (shown, imported) == (repr(reply), "[]")


def test_a_field_without_bounds_cannot_be_declared():
    class Loose(p.Record):
        text: str
    with pytest.raises(TypeError, match="needs its Text bounds"):
        wire.spec(Loose)


@pytest.mark.parametrize("data, says", [
    ({"cmd": "remote-start", "id_tag": "04A1B2C3", "connector": 1, "extra": 1}, "unknown field(s) extra"),
    ({"cmd": "remote-start", "connector": 1}, "remote-start: id_tag missing"),
    ({"cmd": "remote-start", "id_tag": "", "connector": 1}, "id_tag: expected 1..64 characters"),
    ({"cmd": "remote-start", "id_tag": "x" * 65}, "id_tag: expected 1..64 characters"),
    ({"cmd": "remote-start", "id_tag": "a\nb"}, "id_tag: control characters"),
    ({"cmd": "limit", "source": "web", "current_a": 1e999}, "current_a: expected a number"),
    ({"cmd": "limit", "source": "web", "current_a": 1001}, "current_a: expected 0..1000"),
    ({"cmd": "limit", "source": "../x", "current_a": None}, "source: expected [A-Za-z0-9_-]+"),
    ({"cmd": "availability", "connector": True, "operative": False}, "connector: expected an integer"),
    ({"cmd": "availability", "connector": 1, "operative": "no"}, "operative: expected true or false"),
    ({"cmd": "reserve", "id_tag": "A1"}, "until or for_s missing"),
    ({"cmd": "reserve", "id_tag": "A1", "until": "tomorrow"}, "until: expected an ISO 8601 time"),
    ({"cmd": "reserve", "id_tag": "A1", "until": "2026-11-28T18:00:00"}, "with its UTC offset"),
    ({"cmd": "service-status", "status": {"connected": True, "limits_a": {str(i): 6 for i in range(101)}}},
     "at most 100 entries"),
    ({"cmd": "sim", "action": "pilot", "high_v": 9.0}, "give both high_v and low_v"),
    ({"cmd": "sim", "action": "launch"}, "unknown sim action"),
    ({"cmd": "launch"}, "unknown command"),
    ({"cmd": 7}, "cmd: expected a string"),
    ([1, 2], "expected a JSON object"),
])
def test_a_bad_request_is_refused_naming_the_field(data, says):
    with pytest.raises(p.WireError, match=says.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
                       .replace("]", r"\]").replace("+", r"\+")):
        p.parse_request(data)


def test_a_reply_ignores_fields_a_newer_daemon_adds_and_a_request_does_not():
    reply = p.Ping().reply({"ok": True, "added_later": 1})
    assert reply == p.Ok()
    assert p.RemoteStart(id_tag="A").reply({"ok": False, "error": "no", "code": "failed"}) == p.Failure(error="no")
    with pytest.raises(p.WireError):
        p.parse_request({"cmd": "ping", "added_later": 1})


def test_free_text_the_daemon_says_is_cut_to_its_bound_not_refused():
    failure = p.Failure(error="e" * 1000 + "\n")
    assert len(failure.error) == 200 and failure.error.isprintable()


def test_which_events_are_durable_comes_from_their_records():
    at = __import__("datetime").datetime(2026, 11, 28, tzinfo=__import__("datetime").timezone.utc)
    for kind, cls in p.EVENTS.items():
        assert ChargerEvent(kind, 1, at).durable is cls.DURABLE
    assert p.EVENTS["session.stopped"].DURABLE and not p.EVENTS["session.sample"].DURABLE
    assert not ChargerEvent("something.else", 1, at).durable


@given(st.dictionaries(st.sampled_from(["cmd", "action", "connector", "id_tag", "current_a", "source", "seq",
                                        "operative", "until", "for_s", "status", "mode", "after"]),
                       st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=70)
                       | st.sampled_from(["remote-start", "limit", "sim", "tap", "reserve", "ack", "mode"]),
                       max_size=6))
def test_any_request_either_reads_as_a_valid_record_or_is_refused_with_a_wire_error(data):
    try:
        command = p.parse_request(data)
    except p.WireError:
        return
    again = p.parse_request(json.loads(p.encode_line(command.to_wire())))  # what it reads as is valid
    assert again == command
    for value in command.to_wire().values():
        assert not (isinstance(value, float) and not math.isfinite(value))


def test_records_are_frozen_keyword_only_values_that_dataclasses_replace_takes():
    # Records do without the dataclasses module (evsed status must not import it) and become
    # dataclasses only when asked (dataclasses.replace). In a fresh interpreter: replacing a field of
    # one event makes Event a dataclass first; another event type, not yet made, keeps its own fields,
    # and a record reads, compares and hashes the same before and after its class is made.
    import subprocess
    import sys
    code = """
import dataclasses, sys
from evsed import protocol as p
closed = p.ContactorClosed(at="2026-01-01T00:00:00Z", connector=1, offered_a=16.0)
status = p.StatusChanged(at="2026-01-01T00:00:00Z", status="Charging", reason="")
text, key = repr(status), hash(status)
assert dataclasses.replace(closed, seq=7).seq == 7
assert [f.name for f in dataclasses.fields(status)] == ["seq", "at", "connector", "status", "reason", "ev_connected"]
moved = dataclasses.replace(status, connector=2)
assert (moved.connector, moved.status) == (2, "Charging") and moved != status
again = p.StatusChanged(at="2026-01-01T00:00:00Z", status="Charging", reason="")
assert repr(again) == text and hash(again) == key and again == status
state = dataclasses.replace(p.ServiceState(connected=True), detail="x")
assert dict(state.limits_a) == {} and state.limits_a is not p.ServiceState(connected=True).limits_a
for bad in (lambda: setattr(status, "reason", "x"), lambda: p.StatusChanged(status="Charging", reason="")):
    try:
        bad()
    except (AttributeError, TypeError):
        pass
    else:
        raise AssertionError("a record took a change or missed a field")
try:
    dataclasses.replace(status, status="Parked")
except p.WireError:
    pass
else:
    raise AssertionError("replace skipped the bounds")
print("ok")
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "ok", proc.stderr


def test_every_protocol_module_is_held_to_the_standard_library_by_the_import_contract():
    import tomllib
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    (stdlib_only,) = [c for c in contracts if c.get("source_modules", [""])[0] == "evsed.protocol"]
    modules = {f"evsed.{path.stem}" for path in (ROOT / "evsed").glob("protocol*.py")} | {"evsed.wire"}
    assert modules <= set(stdlib_only["source_modules"]), modules - set(stdlib_only["source_modules"])
