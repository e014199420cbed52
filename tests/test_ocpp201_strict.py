"""Strict OCPP-J 2.0.1: a malformed or unexpected CSMS frame gets the CALLERROR OCPP-J 2.0.1 names
(RpcFrameworkError with messageId "-1" when its own id cannot be read, MessageTypeNotSupported,
schema violations by kind), each counted and reported as an InvalidMessages security event;
never a crash, and the station keeps answering."""

from __future__ import annotations

import asyncio
import json
import re
import tempfile
from pathlib import Path

from hypothesis import given, settings, strategies as st
from ocpp.v201 import call

from evsed.uplink.v201.framing import redact
from evsed.uplink.v201.handlers import CentralCommands
from evsed.uplink.v201.uplink import Uplink
from simulator.csms201 import CentralSystem201
from test_ocpp201_fakes import running
from test_ocpp_fakes import FakeLink, aio, booted, settings_for, until

CODES = {"FormatViolation", "GenericError", "InternalError", "MessageTypeNotSupported", "NotImplemented",
         "NotSupported", "OccurrenceConstraintViolation", "PropertyConstraintViolation", "ProtocolError",
         "RpcFrameworkError", "SecurityError", "TypeConstraintViolation"}


class Wire:
    """The websocket as the ChargePoint uses it: what it sent."""

    def __init__(self):
        self.sent: list = []

    async def send(self, message):
        self.sent.append(json.loads(message))

    async def recv(self):
        await asyncio.Future()


STATE = Path(tempfile.mkdtemp(prefix="ocpp201-strict-")) / "ocpp.sqlite"


def answer(frame) -> list | None:
    """What the station sends back for one frame from the CSMS (None: nothing)."""
    async def go():
        wire = Wire()
        uplink = Uplink(settings_for(9, STATE, version="2.0.1"), FakeLink())
        cp = CentralCommands("CP1", wire, uplink.ports)
        try:
            await cp.route_message(frame if isinstance(frame, str) else json.dumps(frame))
            await asyncio.sleep(0)
        finally:
            uplink.close()
        return wire.sent[0] if wire.sent else None
    return asyncio.run(go())


def code(frame, unique_id="id-1") -> str:
    reply = answer(frame)
    assert reply[0] == 4 and reply[1] == unique_id, reply
    return reply[2]


def test_an_unknown_action_is_not_implemented_and_a_known_one_without_support_not_supported():
    assert code([2, "id-1", "MakeCoffee", {}]) == "NotImplemented"
    assert code([2, "id-1", "SetDisplayMessage", {"message": {"id": 1, "priority": "InFront", "message": {
        "format": "ASCII", "content": "hi"}}}]) == "NotSupported"


def readme_section(start: str, end: str) -> str:
    text = (Path(__file__).parent.parent / "README.md").read_text()
    return text[text.index(start):text.index(end, text.index(start))]


def test_the_calls_the_readme_tells_citrineos_users_are_missing_are_those_refused_not_supported():
    """The README's 2.0.1 section names every action the station has no handler for, and the
    paragraph for CitrineOS users lists as NotSupported exactly those the CSMS's CALLs get so."""
    from ocpp.v201.enums import Action
    section = readme_section("## The OCPP 2.0.1 uplink", "## Roaming")
    lacks = readme_section("**What a CitrineOS user still lacks.**", "Never sent:")
    routed = {getattr(f, "_on_action") for f in vars(CentralCommands).values() if hasattr(f, "_on_action")}
    unrouted = {a.value for a in Action} - {a.value for a in routed}
    assert not [name for name in sorted(unrouted) if not re.search(rf"\b{name}\b", section)]
    refused = {name for name in re.findall(r"\b[A-Z][A-Za-z0-9]+\b", lacks) if name in {a.value for a in Action}}
    assert refused <= unrouted and len(refused) >= 9
    assert {name: code([2, "id-1", name, {}]) for name in sorted(refused)} == dict.fromkeys(sorted(refused),
                                                                                           "NotSupported")


def test_schema_violations_get_their_codes():
    assert code([2, "id-1", "Reset", {}]) == "OccurrenceConstraintViolation"
    assert code([2, "id-1", "Reset", {"type": 5}]) == "TypeConstraintViolation"
    assert code([2, "id-1", "ClearCache", {"extra": 1}]) == "FormatViolation"
    assert code([2, "id-1", "Reset", {"type": "Gentle"}]) == "PropertyConstraintViolation"


def test_frames_that_are_not_rpc_get_rpc_framework_error_with_id_minus_one():
    assert code("not json at all", "-1") == "RpcFrameworkError"
    assert code({"an": "object"}, "-1") == "RpcFrameworkError"
    assert code([2, 17, "Reset", {"type": "Immediate"}], "-1") == "RpcFrameworkError"
    assert code([2, "id-1", "Reset"]) == "RpcFrameworkError"
    assert code([2, "id-1", "Reset", []]) == "RpcFrameworkError"
    assert code([7, "id-1", "Reset", {}]) == "MessageTypeNotSupported"


def test_a_password_is_redacted_from_logged_frames():
    frame = json.dumps([2, "1", "SetVariables", {"setVariableData": [{
        "attributeValue": "s3cr3t-v@lue\\\"", "component": {"name": "SecurityCtrlr"},
        "variable": {"name": "BasicAuthPassword"}}]}])
    assert "s3cr3t" not in redact(frame)


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                           max_leaves=12)
actions = st.sampled_from(["Reset", "SetVariables", "GetVariables", "SetChargingProfile", "RequestStartTransaction",
                           "SendLocalList", "GetReport", "TriggerMessage", "ReserveNow", "InstallCertificate", "Nope"])


@settings(max_examples=150, deadline=None)
@given(frame=st.one_of(
    json_values,
    st.tuples(st.just(2), st.text(max_size=40), actions, st.dictionaries(st.text(max_size=20), json_values, max_size=4)).map(list),
    st.lists(json_values, max_size=6),
    st.binary(max_size=40).map(lambda b: b.decode("latin-1"))))
def test_any_frame_gets_a_result_a_callerror_or_nothing_never_a_crash(frame):
    reply = answer(frame if isinstance(frame, str) else json.dumps(frame))
    if reply is not None:
        assert reply[0] in (3, 4)
        if reply[0] == 4:
            assert reply[2] in CODES and reply[2] != "InternalError", reply


@aio
async def test_garbage_on_the_socket_leaves_the_station_answering_and_is_reported(tmp_path):
    csms = CentralSystem201()
    async with running(csms, tmp_path) as (uplink, _):
        await booted(csms, uplink)
        ws = csms.stations["CP1"]._connection
        for junk in ("{", "[]", '[2,"a"]', '[2,"b","Reset",{"type":1}]', '[5,"c",{}]', '[3,"nobody",{}]'):
            await ws.send(junk)
        result = await csms.call("CP1", call.GetVariables(get_variable_data=[
            {"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "HeartbeatInterval"}}]))
        assert result.get_variable_result[0]["attribute_value"] == "300"
        await until(lambda: uplink.cp.malformed == 4)
        await csms.wait_for(lambda: any(p["type"] == "InvalidMessages"  # one of a kind queued at a time
                                        for _, p in csms.actions("SecurityEventNotification")))
