"""The actions a logged-in person may take on the page, checked and turned into control-socket
requests (docs/protocol.md): nothing from the browser reaches the daemon unchecked.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
from typing import Any

from evsed import protocol as p

ID_TAG = re.compile(r"^[A-Za-z0-9_:-]{1,20}$")  # an OCPP 1.6 IdToken is at most 20 characters
HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


class CommandError(ValueError):
    """The browser asked for something malformed; the message says what."""


def _connector(body: dict, hello: p.HelloReply, *, any_ok: bool) -> int:
    cid = body.get("connector")
    known = list(hello.connectors)
    if isinstance(cid, bool) or not isinstance(cid, int) or not (cid in known or (any_ok and cid == 0)):
        raise CommandError(f"connector: expected one of {known + [0] if any_ok else known}, got {cid!r}")
    return cid


def _id_tag(body: dict) -> str:
    tag = body.get("id_tag")
    if not isinstance(tag, str) or not ID_TAG.match(tag.strip()):
        raise CommandError("card: expected a card UID or id tag (letters, digits, at most 20)")
    return tag.strip().upper()


def to_request(body: object, hello: p.HelloReply, now: dt.datetime) -> p.Command[Any]:
    """The control-socket command for one page action; now (UTC) dates a reservation."""
    if not isinstance(body, dict):
        raise CommandError("expected a JSON object")
    action = body.get("action")
    if action == "stop":
        return p.RemoteStop(connector=_connector(body, hello, any_ok=False), reason="remote")
    if action == "start":
        return p.RemoteStart(connector=_connector(body, hello, any_ok=False), id_tag=_id_tag(body))
    if action == "availability":
        operative = body.get("operative")
        if not isinstance(operative, bool):
            raise CommandError("operative: expected true or false")
        return p.Availability(connector=_connector(body, hello, any_ok=True), operative=operative)
    if action == "mode":
        mode = body.get("mode")
        if mode not in p.MODES:
            raise CommandError(f"mode: expected one of {', '.join(p.MODES)}")
        return p.SetMode(mode=mode)
    if action == "reserve":
        minutes = body.get("minutes")
        if isinstance(minutes, bool) or not isinstance(minutes, int) or not 1 <= minutes <= 24 * 60:
            raise CommandError("minutes: expected a whole number from 1 to 1440")
        return p.Reserve(connector=_connector(body, hello, any_ok=True), id_tag=_id_tag(body),
                         until=now + dt.timedelta(minutes=minutes), reservation_id=secrets.randbelow(2**31 - 1) + 1)
    if action == "cancel-reservation":
        rid = body.get("reservation_id")
        if isinstance(rid, bool) or not isinstance(rid, int) or not 0 <= rid < 2**31:
            raise CommandError("reservation_id: expected a number")
        return p.CancelReservation(reservation_id=rid)
    if action == "limit":  # the page's own limit source: the owner's slider
        current = body.get("current_a")
        if current is not None and (isinstance(current, bool) or not isinstance(current, (int, float))
                                    or not 0 <= current <= 80):
            raise CommandError("current_a: expected a number of amperes from 0 to 80, or null to lift the limit")
        return p.Limit(source="web", connector=_connector(body, hello, any_ok=True),
                       current_a=None if current is None else float(current))
    if action == "plan":  # energy by a time, in the cheapest hours (the daemon checks the rest)
        energy = body.get("energy_kwh")
        if isinstance(energy, bool) or not isinstance(energy, (int, float)) or not 0.1 <= energy <= 300:
            raise CommandError("energy_kwh: expected a number of kWh from 0.1 to 300")
        by = body.get("by")
        if not isinstance(by, str) or not HHMM.match(by):
            raise CommandError("by: expected a time such as 07:00")
        return p.SetPlan(connector=_connector(body, hello, any_ok=False), energy_kwh=float(energy), by=by,
                         origin="web")
    if action == "plan-cancel":
        return p.CancelPlan(connector=_connector(body, hello, any_ok=False))
    if action == "learn":
        return p.Learn(timeout_s=60.0)
    if action == "learned":
        return p.Learned()
    if action == "add-card":  # the card the page learned: a name and a group for the config file
        name, group = body.get("name"), body.get("group", "")
        if not isinstance(name, str) or not 1 <= len(name.strip()) <= 40 or not name.isprintable():
            raise CommandError("name: expected 1 to 40 printable characters")
        if not isinstance(group, str) or len(group) > 64 or not group.isprintable():
            raise CommandError("group: expected a group's name")
        return p.AddCard(uid=_id_tag({"id_tag": body.get("uid")}), name=name.strip(), group=group)
    if action == "clear-faults":
        return p.ClearFaults(connector=_connector(body, hello, any_ok=False))
    raise CommandError(f"unknown action {action!r}")
