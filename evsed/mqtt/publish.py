"""What the MQTT service publishes: retained state topics from a `status` reply, and messages for an event.

Pure functions over the protocol's records, time passed in. Numbers as people read them (W and Wh whole,
A to 0.1); card UIDs never leave unless [mqtt] card_uids says so: the card's name and group stand for it.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import Any, Callable

from evsed import protocol as p
from evsed.mqtt.topics import LIMIT_SOURCE, NONE, OFF, ON, PAUSE_SOURCE, PHASES, Message, Topics, departure_hhmm
from evsed.web.faults import problem_text

UID_KEYS = frozenset({"id_tag", "started_by", "parent_id_tag"})  # what carries a card's UID in the protocol
PILOT_STATES = ("A", "B", "C", "D", "E", "F")
PLUGGED = ("B", "C", "D")


def _number(value: float | None, digits: int = 0) -> str:
    if value is None or not math.isfinite(value):
        return ""  # an empty retained payload would delete the topic: callers skip ""
    return str(round(value)) if digits == 0 else f"{float(value):.{digits}f}"


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def _round(key: str, value: Any) -> Any:
    """W and Wh whole, A, V and % to 0.1, by the unit in the key's name."""
    if isinstance(value, (list, tuple)):
        return [_round(key, v) for v in value]
    if isinstance(value, bool) or not isinstance(value, float) or not math.isfinite(value):
        return value
    if key.endswith(("_w", "_wh")):
        return round(value)
    if key.endswith(("_a", "_v", "_pct")):
        return round(value, 1)
    return value


def clean(value: Any, card_uids: bool = False) -> Any:
    """A record's wire form as it may be published: numbers rounded, card UIDs left out."""
    if isinstance(value, dict):
        return {k: clean(_round(k, v), card_uids) for k, v in value.items() if card_uids or k not in UID_KEYS}
    if isinstance(value, (list, tuple)):
        return [clean(v, card_uids) for v in value]
    return value


def availability(c: p.ConnectorStatus) -> tuple[bool, bool]:
    """(available now, a change to unavailable pending): inoperative takes effect after the session."""
    running = c.session is not None
    return c.operative or running, not c.operative and running


def state_messages(topics: Topics, reply: p.StatusReply, now: dt.datetime, *, card_uids: bool = False,
                   currency_decimals: int = 2) -> list[Message]:
    """Retained state topics from a `status` reply (docs/protocol.md). now: aware, in the charger's
    time zone (a fault's retry time is said in it)."""
    out: list[Message] = []
    for c in reply.connectors:
        out += _connector_state(topics, c, now, card_uids, currency_decimals)
    out.append(Message(topics.charger("mode"), reply.mode))
    out.append(Message(topics.charger("modes"), _json(list(reply.modes))))
    if reply.connectors:
        limits = [c.limits for c in reply.connectors]
        paused = any(m.get(PAUSE_SOURCE) is not None for m in limits)
        out.append(Message(topics.charger("paused"), ON if paused else OFF))
        own = next((m[LIMIT_SOURCE] for m in limits if m.get(LIMIT_SOURCE) is not None), None)
        out.append(Message(topics.charger("current_limit_a"), _number(own, 1) or NONE))  # None: lifted
        states = [availability(c) for c in reply.connectors]
        out.append(Message(topics.charger("available"), ON if any(a for a, _ in states) else OFF))
        out.append(Message(topics.charger("available_pending"), ON if any(w for _, w in states) else OFF))
    return [m for m in out if m.payload != ""]


def _connector_state(topics: Topics, c: p.ConnectorStatus, now: dt.datetime, card_uids: bool,
                     decimals: int) -> list[Message]:
    def topic(name: str) -> str:
        return topics.connector(c.id, name)

    measured, session, limits = c.measured, c.session, dict(c.limits)
    problem = problem_text(c, now, now.tzinfo or dt.timezone.utc)
    allowed = 0.0 if problem else c.allowed_a  # nothing may charge while faulted
    available, pending = availability(c)
    out = [
        Message(topic("status"), c.status),
        Message(topic("state"), c.state or NONE),
        Message(topic("plugged"), NONE if c.state is None else ON if c.state in PLUGGED else OFF),
        Message(topic("charging"), ON if c.status == "Charging" else OFF),
        Message(topic("problem"), ON if problem else OFF),
        Message(topic("fault"), problem[:1].upper() + problem[1:] if problem else "none"),
        Message(topic("contactor"), c.contactor),
        Message(topic("offered_a"), _number(c.offered_a, 1)),
        Message(topic("allowed_a"), _number(allowed, 1)),
        Message(topic("limit"), _json(clean({"allowed_a": allowed, "binding": "fault" if problem else c.binding,
                                             "limits": {k: _round("_a", v) for k, v in limits.items()}}))),
        Message(topic("available"), ON if available else OFF),
        Message(topic("available_pending"), ON if pending else OFF),
        Message(topic("session"), _json(clean(session.to_wire(), card_uids) if session else None)),
        Message(topic("faults"), _json(clean([f.to_wire() for f in c.faults]))),
    ]
    fresh = measured is not None and not measured.stale
    if measured is not None and fresh:
        out.append(Message(topic("power_w"), _number(measured.power_w)))
        out.append(Message(topic("energy_wh"), _number(measured.energy_wh)))
        for phase, value in zip(PHASES, measured.current_a):
            out.append(Message(topic(f"current_a/{phase}"), _number(value, 1)))
    elif measured is None and session is None and c.contactor == "open":
        fresh = True  # no meter (or none read yet), nothing drawn: 0 W is what is true
        out.append(Message(topic("power_w"), "0"))
    out.append(Message(topic("reading"), "fresh" if fresh else "stale"))  # a stale value is not shown as now's
    if session is not None:
        out += _card(topic, session.card_name, session.group)
        out.append(Message(topic("session/energy_wh"), _number(session.energy_wh)))
        if session.price is not None:
            out.append(Message(topic("session/cost"), f"{session.price:.{decimals}f}"))
    else:
        out += [Message(topic("session/card"), NONE), Message(topic("session/group"), NONE)]
    return out + _plan(topic, c.plan, decimals)


def _plan(topic: Callable[[str], str], plan: p.PlanNow | None, decimals: int) -> list[Message]:
    """The connector's charging plan: the whole of it as JSON (its first slots, as status has them), and
    what Home Assistant's plan entities read; `None` (unknown) for what a connector without a plan lacks."""
    if plan is None:
        return [Message(topic("plan"), "null"), Message(topic("plan/state"), "none"),
                Message(topic("plan/reason"), "no plan"), Message(topic("plan/infeasible"), OFF),
                Message(topic("plan/slots"), "[]")] + \
            [Message(topic(f"plan/{name}"), NONE) for name in ("energy_kwh", "by", "departure", "finish", "cost")]
    whole = clean(plan.to_wire())
    return [
        Message(topic("plan"), _json(whole)),
        Message(topic("plan/state"), plan.state),
        Message(topic("plan/reason"), plan.reason or plan.state),
        Message(topic("plan/infeasible"), ON if plan.state == "infeasible" else OFF),
        Message(topic("plan/slots"), _json(whole.get("slots", []))),
        Message(topic("plan/energy_kwh"), f"{plan.energy_wh / 1000:.1f}"),
        Message(topic("plan/by"), plan.by),
        Message(topic("plan/departure"), departure_hhmm(plan.by)),
        Message(topic("plan/finish"), plan.finish or NONE),
        Message(topic("plan/cost"), NONE if plan.cost is None else f"{plan.cost:.{decimals}f}"),
    ]


def _card(topic: Callable[[str], str], card_name: str, group: str) -> list[Message]:
    """The session's card as people know it: its name and group, never its UID."""
    return [Message(topic("session/card"), card_name or "unnamed card"),
            Message(topic("session/group"), group or "no group")]


def event_messages(topics: Topics, event: p.Event, *, card_uids: bool = False) -> list[Message]:
    """What one event of the stream publishes: every event but meter samples on <base>/event, and the
    session start and stop on the connector's topics (not retained: they happened once). The stop's
    energy is the session's final figure, as stored: session/energy_wh and session/last say it."""
    if isinstance(event, p.SessionSample):
        return []
    body = _json(clean(event.to_wire(), card_uids))
    out = [Message(topics.event, body, retain=False)]
    if event.connector > 0:
        def topic(name: str) -> str:
            return topics.connector(event.connector, name)
        if isinstance(event, p.SessionStarted):
            out.append(Message(topic("session/started"), body, retain=False))
            out.append(Message(topic("session/energy_wh"), "0"))
            out += _card(topic, event.card_name, event.group)
        elif isinstance(event, p.SessionStopped):
            out.append(Message(topic("session/stopped"), body, retain=False))
            out.append(Message(topic("session/last"), body))
            out.append(Message(topic("session/energy_wh"), _number(event.energy_wh)))
    return out
