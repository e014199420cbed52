"""Protocol records for tests of pure functions (formatting, views, topics): a connector's status
with an idle charger's values, changed by keyword; the records check every field they are given."""

from dataclasses import replace

from evsed import protocol as p

IDLE = p.ConnectorStatus(
    id=1, status="Available", state="A", pilot_output="off", duty_pct=None, allowed_a=32.0, offered_a=0.0,
    contactor="open", operative=True, measured=None, error_code="NoError", session=None, faults=(), reason="no EV",
    pilot_error="", meter_error="", last_refusal=None,
    limit_chain=(p.ChainLink(source="hardware", current_a=32.0, detail="charger rating", binding=True),),
    offer_a=32.0, not_charging=None, mode="fast", group="")


def chain(limits: dict, binding: str | None = None) -> tuple[p.ChainLink, ...]:
    """A status's limit chain: the 32 A hardware link, then limits (source -> A) in their order;
    binding: the source marked (default: the lowest, the first among equals)."""
    values = {"hardware": 32.0, **limits}
    binding = binding or min(values, key=lambda s: values[s])
    return tuple(p.ChainLink(source=s, current_a=a, detail="", binding=s == binding) for s, a in values.items())


def connector(**fields) -> p.ConnectorStatus:
    """IDLE changed by fields; limits= (source -> A) and binding= build its limit_chain."""
    if "limits" in fields or "binding" in fields:
        fields["limit_chain"] = chain(fields.pop("limits", {}), fields.pop("binding", None))
    return replace(IDLE, **fields)


def session(**fields) -> p.SessionNow:
    base = dict(id=1, id_tag="04A1B2C3", card_name="", group="", started_at="2026-11-28T10:00:00Z",
                energy_wh=0, power_w=0.0, peak_power_w=0.0)
    return p.SessionNow(**{**base, **fields})


def status(*connectors: p.ConnectorStatus, **fields) -> p.StatusReply:
    base = dict(charger="evsed", mode="fast", card_reader_error="", site=None, connectors=connectors or (IDLE,))
    return p.StatusReply(**{**base, **fields})  # connectors=() in fields: a status with none


EVENT_DEFAULTS = {  # what the daemon always sends with each, for tests that give only what they look at
    "connector.status": dict(reason=""),
    "session.started": dict(id_tag="04A1B2C3", card_name="", group="", auth_source="local", meter_start_wh=0,
                            meter_start_unknown=False, started_at="2026-11-28T16:20:00Z"),
    "session.stopped": dict(id_tag="04A1B2C3", card_name="", group="", auth_source="local",
                            started_at="2026-11-28T16:20:00Z", meter_start_wh=0, meter_stop_wh=0, energy_wh=0,
                            peak_power_w=0.0, reason="ev_disconnected", stopped_at="2026-11-28T17:00:00Z"),
    "session.sample": dict(energy_wh=0, meter_last_wh=0, session_energy_wh=0, power_w=0.0, peak_power_w=0.0,
                           current_a=(), voltage_v=(), offered_a=0.0),
}


def event(kind: str, *, seq: int | None, at: str, connector: int = 1, **fields) -> p.Event:
    return p.EVENTS[kind](seq=seq, at=at, connector=connector, **{**EVENT_DEFAULTS.get(kind, {}), **fields})
