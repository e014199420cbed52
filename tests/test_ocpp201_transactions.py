"""OCPP 2.0.1 TransactionEvents from the daemon's durable events, pure: where TxStartPoint and
TxStopPoint put a transaction's start and end, seqNo, triggerReason, chargingState, idToken,
offline, meter values and stoppedReason; every payload fits the official schema."""

from __future__ import annotations

import itertools

from hypothesis import given, settings, strategies as st
from ocpp.messages import MessageType, get_validator

from evsed.uplink.v201.transactions import Context, Evse, meter_update, sampled, step, token_type

SAMPLE = {"session": "s1", "energy_wh": 1250, "power_w": 7200.0, "current_a": [10.4, 10.5, 10.3],
          "voltage_v": [230.1, 229.8, 230.4], "offered_a": 16.0}
AT = "2026-11-28T16:20:00.123Z"


def status(name: str, plugged: bool | None = None) -> dict:
    event = {"type": "connector.status", "status": name, "at": AT}
    if plugged is not None:
        event["ev_connected"] = plugged
    return event


def started(session="s1", tag="04A1B2C3", meter=1000, source="local") -> dict:
    return {"type": "session.started", "session": session, "id_tag": tag, "meter_start_wh": meter,
            "auth_source": source, "started_at": "2026-11-28T16:20:01.000Z", "at": AT}


def stopped(reason="ev_disconnected", meter=1500) -> dict:
    return {"type": "session.stopped", "session": "s1", "reason": reason, "meter_stop_wh": meter,
            "stopped_at": "2026-11-28T16:50:00.000Z", "at": AT}


CLOSED = {"type": "contactor.closed", "at": AT}
OPENED = {"type": "contactor.opened", "at": AT}


class Run:
    """An EVSE fed events in order under one TxCtrlr setting; the payloads it sent."""

    def __init__(self, start="PowerPathClosed", stop="EVConnected,Authorized", **ctx):
        self.evse, self.sent = Evse(), []
        self.start, self.stop = frozenset(start.split(",")), frozenset(stop.split(","))
        self.ids = (f"tx-{n}" for n in itertools.count(1))
        self.ctx = ctx

    def feed(self, *events, **ctx) -> list[dict]:
        out = []
        for event in events:
            context = Context(1, self.start, self.stop, next(self.ids), **{**self.ctx, **ctx})
            self.evse, payloads = step(self.evse, event, context)
            for payload in payloads:
                valid(payload)
            out += payloads
        self.sent += out
        return out


def valid(payload: dict) -> None:
    errors = list(get_validator(MessageType.Call, "TransactionEvent", "2.0.1").iter_errors(payload))
    assert not errors, (errors[0].message, payload)


def summary(payloads) -> list[tuple]:
    return [(p["eventType"], p["seqNo"], p["triggerReason"], p["transactionInfo"].get("chargingState"))
            for p in payloads]


def test_by_default_a_transaction_runs_from_the_closed_power_path_to_the_end_of_the_session():
    run = Run(sample=SAMPLE)
    assert run.feed(status("Preparing", True), started()) == []
    (start,) = run.feed(CLOSED)
    run.feed(status("Charging"), status("SuspendedEV"), status("Charging"))
    (end,) = run.feed(stopped("ev_disconnected"), status("Available", False))[:1]
    assert summary(run.sent) == [("Started", 0, "ChargingStateChanged", "EVConnected"),
                                 ("Updated", 1, "ChargingStateChanged", "Charging"),
                                 ("Updated", 2, "ChargingStateChanged", "SuspendedEV"),
                                 ("Updated", 3, "ChargingStateChanged", "Charging"),
                                 ("Ended", 4, "EVCommunicationLost", "Idle")]
    assert start["idToken"] == {"idToken": "04A1B2C3", "type": "ISO14443"}
    assert start["evse"] == {"id": 1, "connectorId": 1}
    assert {p["transactionInfo"]["transactionId"] for p in run.sent} == {"tx-3"}
    assert end["transactionInfo"]["stoppedReason"] == "EVDisconnected" and "idToken" not in end
    assert end["timestamp"] == "2026-11-28T16:50:00.000Z"
    assert end["meterValue"][0]["sampledValue"] == [{"value": 1500, "context": "Transaction.End",
                                                     "measurand": "Energy.Active.Import.Register",
                                                     "unitOfMeasure": {"unit": "Wh"}}]
    assert run.evse.tx is None


def test_a_transaction_from_ev_connected_is_authorized_later_in_an_update():
    run = Run(start="EVConnected")
    (start,) = run.feed(status("Preparing", True))
    assert (start["triggerReason"], start["transactionInfo"]["chargingState"]) == ("CablePluggedIn", "EVConnected")
    assert "idToken" not in start
    (auth,) = run.feed(started())
    assert auth["triggerReason"] == "Authorized" and auth["idToken"]["idToken"] == "04A1B2C3" and auth["seqNo"] == 1
    (end,) = run.feed(stopped("local"))
    assert (end["triggerReason"], end["transactionInfo"]["stoppedReason"]) == ("StopAuthorized", "Local")


def test_an_ev_that_leaves_unauthorized_ends_its_transaction():
    run = Run(start="EVConnected", stop="Authorized")
    run.feed(status("Preparing", True))
    (end,) = run.feed(status("Available", False))
    assert (end["eventType"], end["transactionInfo"]["stoppedReason"]) == ("Ended", "EVDisconnected")


def test_a_transaction_from_authorization_starts_with_the_token():
    run = Run(start="Authorized")
    run.feed(status("Preparing", True))
    (start,) = run.feed(started(meter=1000))
    assert start["triggerReason"] == "Authorized" and start["idToken"]["idToken"] == "04A1B2C3"
    assert start["timestamp"] == "2026-11-28T16:20:01.000Z"
    assert start["meterValue"][0]["sampledValue"][0]["value"] == 1000


def test_with_stop_point_ev_connected_a_card_stop_ends_the_authorization_not_the_transaction():
    run = Run(start="Authorized", stop="EVConnected")
    run.feed(status("Preparing", True), started(), CLOSED, status("Charging"))
    (deauth,) = run.feed(stopped("local", meter=1400))
    assert (deauth["eventType"], deauth["triggerReason"]) == ("Updated", "StopAuthorized")
    run.feed(OPENED, status("Finishing"))
    (end,) = run.feed(status("Available", False))
    assert (end["eventType"], end["triggerReason"], end["transactionInfo"]["stoppedReason"]) == \
        ("Ended", "EVCommunicationLost", "EVDisconnected")
    assert end["meterValue"][0]["sampledValue"][0]["value"] == 1400  # the session's stop reading


def test_with_stop_point_power_path_closed_each_closing_is_a_transaction_of_its_own():
    run = Run(start="PowerPathClosed", stop="PowerPathClosed", sample=SAMPLE)
    run.feed(status("Preparing", True), started(), CLOSED, status("Charging"))
    (end,) = run.feed(OPENED)
    assert (end["eventType"], end["triggerReason"]) == ("Ended", "ChargingStateChanged")
    (again,) = run.feed(CLOSED)
    assert again["eventType"] == "Started" and again["seqNo"] == 0
    assert again["transactionInfo"]["transactionId"] != end["transactionInfo"]["transactionId"]
    assert again["idToken"]["idToken"] == "04A1B2C3"  # the session's token, for the new transaction


def test_with_start_point_energy_transfer_the_transaction_starts_when_charging_does():
    run = Run(start="EnergyTransfer")
    assert run.feed(status("Preparing", True), started(), CLOSED) == []
    (start,) = run.feed(status("Charging"))
    assert start["transactionInfo"]["chargingState"] == "Charging"


def test_a_remote_start_says_its_remote_start_id():
    run = Run(start="Authorized")
    run.feed(status("Preparing", True))
    (start,) = run.feed(started(tag="ab-12-cd", source="ocpp"), remote_start_id=7, id_type="Central")
    assert start["triggerReason"] == "RemoteStart" and start["transactionInfo"]["remoteStartId"] == 7
    assert start["idToken"] == {"idToken": "ab-12-cd", "type": "Central"}  # as the CSMS gave it


def test_a_remote_start_after_the_plug_updates_the_transaction_with_its_id():
    run = Run(start="EVConnected")
    run.feed(status("Preparing", True))
    (auth,) = run.feed(started(tag="ab-12-cd", source="ocpp"), remote_start_id=9, id_type="Central")
    assert auth["triggerReason"] == "RemoteStart" and auth["transactionInfo"]["remoteStartId"] == 9


def test_stop_reasons_map_to_their_trigger_and_stopped_reason():
    cases = {"remote": ("RemoteStop", "Remote"), "deauthorized": ("Deauthorized", "DeAuthorized"),
             "ground_fault": ("AbnormalCondition", "GroundFault"), "power_loss": ("AbnormalCondition", "PowerLoss"),
             "emergency_stop": ("AbnormalCondition", "EmergencyStop"), "reboot": ("AbnormalCondition", "Reboot"),
             "something new": ("AbnormalCondition", "Other")}
    for reason, wanted in cases.items():
        run = Run(start="Authorized")
        run.feed(status("Preparing", True), started())
        (end,) = run.feed(stopped(reason))
        assert (end["triggerReason"], end["transactionInfo"]["stoppedReason"]) == wanted


def test_a_reset_the_uplink_asked_for_is_its_stopped_reason():
    run = Run(start="Authorized")
    run.feed(status("Preparing", True), started())
    (end,) = run.feed(stopped("other"), stop_reason="reset")
    assert (end["triggerReason"], end["transactionInfo"]["stoppedReason"]) == ("ResetCommand", "ImmediateReset")


def test_events_while_offline_say_so():
    run = Run(start="Authorized")
    run.feed(status("Preparing", True))
    (start,) = run.feed(started(), offline=True)
    assert start["offline"] is True
    (end,) = run.feed(stopped(), offline=False)
    assert "offline" not in end


def test_free_vend_sessions_carry_no_authorization():
    run = Run(start="Authorized")
    run.feed(status("Preparing", True))
    (start,) = run.feed(started(tag="free", source="free_vend"))
    assert start["idToken"] == {"idToken": "", "type": "NoAuthorization"}


def test_the_started_and_ended_carry_the_measurands_asked_for():
    measurands = ("Energy.Active.Import.Register", "Current.Import", "Voltage", "Power.Active.Import",
                  "Current.Offered")
    run = Run(start="Authorized", sample=SAMPLE, started_measurands=measurands, ended_measurands=measurands)
    run.feed(status("Preparing", True))
    (start,) = run.feed(started())
    values = start["meterValue"][0]["sampledValue"]
    assert values[0]["value"] == 1000 and values[0]["context"] == "Transaction.Begin"
    assert [v.get("phase") for v in values if v["measurand"] == "Current.Import"] == ["L1", "L2", "L3"]
    assert [v["phase"] for v in values if v["measurand"] == "Voltage"] == ["L1-N", "L2-N", "L3-N"]


def test_meter_updates_belong_to_the_open_transaction_and_count_in_its_seqno():
    run = Run(start="Authorized")
    run.feed(status("Preparing", True), started())
    values = sampled(SAMPLE, 1250, ("Energy.Active.Import.Register", "Power.Active.Import"), "Sample.Periodic")
    run.evse, payload = meter_update(run.evse, AT, "MeterValuePeriodic", values, offline=False)
    valid(payload)
    assert payload["seqNo"] == 1 and payload["meterValue"][0]["sampledValue"][1]["value"] == 7200.0
    (end,) = run.feed(stopped())
    assert end["seqNo"] == 2
    assert meter_update(run.evse, AT, "MeterValuePeriodic", values, offline=False)[1] is None


def test_the_evse_survives_a_round_trip_through_its_stored_form():
    run = Run(start="Authorized")
    run.feed(status("Preparing", True), started())
    assert Evse.from_json(run.evse.to_json()) == run.evse


def test_token_types():
    assert token_type("04A1B2C3", "local") == "ISO14443"
    assert token_type("04A1B2C3D4E5F6", "ocpp") == "ISO14443"
    assert token_type("alice", "local") == "Local"
    assert token_type("x", "free_vend") == "NoAuthorization"


daemon_events = st.sampled_from([
    status("Preparing", True), status("Preparing", False), status("Charging"), status("SuspendedEV"),
    status("SuspendedEVSE"), status("Finishing"), status("Available", False), status("Faulted"),
    started(), stopped("local"), stopped("ev_disconnected"), stopped("power_loss"), CLOSED, OPENED])
points = st.sets(st.sampled_from(["EVConnected", "Authorized", "PowerPathClosed", "EnergyTransfer"]), min_size=1)


@settings(max_examples=300, deadline=None)
@given(events=st.lists(daemon_events, max_size=30), start=points, stop=points, offline=st.lists(st.booleans()))
def test_any_event_order_gives_well_formed_transactions_each_ended_once_the_ev_leaves(events, start, stop, offline):
    run = Run(start=",".join(sorted(start)), stop=",".join(sorted(stop)))
    for n, event in enumerate(events):
        run.feed(event, offline=offline[n] if n < len(offline) else False)
    run.feed(stopped("ev_disconnected"), OPENED, status("Available", False))
    assert run.evse.tx is None
    by_tx: dict[str, list[dict]] = {}
    for payload in run.sent:
        by_tx.setdefault(payload["transactionInfo"]["transactionId"], []).append(payload)
    for tid, payloads in by_tx.items():
        kinds = [p["eventType"] for p in payloads]
        assert kinds[0] == "Started" and kinds[-1] == "Ended" and "Started" not in kinds[1:] \
            and "Ended" not in kinds[:-1], kinds
        assert [p["seqNo"] for p in payloads] == list(range(len(payloads)))
        assert sum("idToken" in p for p in payloads) <= 1


def test_a_transactions_times_never_go_backwards():
    run = Run(start="Authorized")
    run.feed(status("Preparing", True), started())
    early = {**stopped(), "stopped_at": "2026-11-28T16:00:00.000Z"}  # a clock stepped back
    (end,) = run.feed(early)
    assert end["timestamp"] == "2026-11-28T16:20:01.000Z" == end["meterValue"][0]["timestamp"]
