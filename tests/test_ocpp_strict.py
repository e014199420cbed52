"""Strict OCPP-J 1.6: a malformed or unexpected CSMS frame gets the CALLERROR the specification
names, or is dropped and counted when it cannot be answered; never a crash."""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path

from hypothesis import given, strategies as st

from evsed.uplink.v16.handlers import CentralCommands
from evsed.uplink.v16.framing import redact
from evsed.uplink.v16.uplink import Uplink
from simulator.csms import CentralSystem
from test_ocpp_fakes import FakeLink, aio, booted, running, settings_for


class Wire:
    """The websocket as the ChargePoint uses it: what it sent."""

    def __init__(self):
        self.sent: list = []

    async def send(self, message):
        self.sent.append(json.loads(message))

    async def recv(self):
        await asyncio.Future()


STATE = Path(tempfile.mkdtemp(prefix="ocpp-strict-")) / "ocpp.sqlite"


def answer(frame) -> list | None:
    """What the charge point sends back for one frame from the CSMS (None: nothing)."""
    async def go():
        wire = Wire()
        uplink = Uplink(settings_for(9, STATE), FakeLink())
        cp = CentralCommands("CP1", wire, uplink.ports)
        try:
            await cp.route_message(frame if isinstance(frame, str) else json.dumps(frame))
        finally:
            uplink.close()
        return wire.sent[0] if wire.sent else None, cp.malformed
    reply, malformed = asyncio.run(go())
    assert reply is not None or malformed == 1
    return reply


def code(frame) -> str:
    reply = answer(frame)
    assert reply[0] == 4 and reply[1] == "id-1"
    return reply[2]


def test_an_unknown_action_is_not_implemented():
    assert code([2, "id-1", "MakeCoffee", {}]) == "NotImplemented"


def test_a_known_action_without_support_is_not_supported():
    assert code([2, "id-1", "GetLog", {"logType": "DiagnosticsLog", "requestId": 1,
                                        "log": {"remoteLocation": "http://h/"}}]) == "NotSupported"


def test_a_missing_field_is_a_protocol_error():
    assert code([2, "id-1", "ChangeConfiguration", {"key": "HeartbeatInterval"}]) == "ProtocolError"


def test_a_wrong_type_is_a_type_constraint_violation():
    assert code([2, "id-1", "ChangeConfiguration", {"key": 5, "value": "1"}]) == "TypeConstraintViolation"


def test_an_unknown_field_is_a_formation_violation():
    assert code([2, "id-1", "ClearCache", {"extra": 1}]) == "FormationViolation"


def test_a_value_outside_the_enumeration_is_a_property_constraint_violation():
    assert code([2, "id-1", "Reset", {"type": "Gentle"}]) == "PropertyConstraintViolation"


def test_a_call_that_is_not_four_elements_is_a_formation_violation():
    assert code([2, "id-1", "Reset"]) == "FormationViolation"
    assert code([2, "id-1", "Reset", []]) == "FormationViolation"


def test_a_frame_without_an_id_is_dropped_and_counted():
    assert answer("not json at all") is None
    assert answer({"an": "object"}) is None
    assert answer([2, 17, "Reset", {}]) is None


def test_the_authorization_key_is_redacted_from_logged_frames():
    frame = json.dumps([2, "1", "ChangeConfiguration", {"key": "AuthorizationKey", "value": "s3cr3t-v@lue\\\""}])
    assert "s3cr3t" not in redact(frame)


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                           max_leaves=12)
actions = st.sampled_from(["Reset", "ChangeConfiguration", "SetChargingProfile", "RemoteStartTransaction",
                           "SendLocalList", "GetConfiguration", "TriggerMessage", "ReserveNow", "Nope"])


@given(frame=st.one_of(
    json_values,
    st.tuples(st.just(2), st.text(max_size=40), actions, st.dictionaries(st.text(max_size=20), json_values, max_size=4)).map(list),
    st.lists(json_values, max_size=6),
    st.binary(max_size=40).map(lambda b: b.decode("latin-1"))))
def test_any_frame_gets_a_callerror_or_is_dropped_never_a_crash(frame):
    reply = answer(frame if isinstance(frame, str) else json.dumps(frame))
    if reply is not None:
        assert reply[0] in (3, 4)
        if reply[0] == 4:
            assert reply[2] in ("NotImplemented", "NotSupported", "InternalError", "ProtocolError", "SecurityError",
                                "FormationViolation", "PropertyConstraintViolation", "OccurenceConstraintViolation",
                                "TypeConstraintViolation", "GenericError")
            assert reply[2] != "InternalError", reply


@aio
async def test_garbage_on_the_socket_leaves_the_charge_point_answering(tmp_path):
    csms = CentralSystem()
    async with running(csms, tmp_path) as (uplink, _):
        await booted(csms, uplink)
        ws = csms.stations["CP1"]._connection
        for junk in ("{", "[]", '[2,"a"]', '[2,"b","Reset",{"type":1}]', '[5,"c",{}]', '[3,"nobody",{}]'):
            await ws.send(junk)
        from ocpp.v16 import call
        result = await csms.call("CP1", call.GetConfiguration(key=["HeartbeatInterval"]))
        assert result.configuration_key[0]["value"] == "300"
        assert uplink.cp.malformed == 2
