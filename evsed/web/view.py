"""What the page shows, derived from the daemon's status reply: pure functions, time passed in.

A connector's status (docs/protocol.md `status`) becomes the sentence a person reads
("Charging 7.2 kW, 12.4 kWh, €3.10 so far"), its limits a table with the binding one marked.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from evsed import protocol as p

FAULT_TEXT = {
    "rcd": "RCD tripped",
    "rcd_self_test": "RCD self-test failed",
    "welded": "contactor welded",
    "contactor_mismatch": "contactor did not switch",
    "diode": "EV diode check failed",
    "overcurrent": "EV drew more than offered",
}

SOURCE_TEXT = {
    "window": "time window",
    "group": "card group",
    "site": "site meter",
    "ocpp": "network operator",
    "mqtt": "MQTT",
    "web": "web page",
    "external": "external input",
}

CURRENCY_SIGN = {"EUR": "€", "GBP": "£", "USD": "$", "CHF": "CHF ", "SEK": "SEK ", "NOK": "NOK ", "DKK": "DKK "}


def kw(power_w: float) -> str:
    return f"{power_w / 1000:.1f} kW"


def kwh(energy_wh: float) -> str:
    return f"{energy_wh / 1000:.1f} kWh"


def money(amount: float, currency: str) -> str:
    sign = CURRENCY_SIGN.get(currency.upper(), currency.upper() + " " if currency else "")
    return f"{sign}{amount:.2f}"


def clock(when: dt.datetime, tz: dt.tzinfo) -> str:
    return when.astimezone(tz).strftime("%H:%M")


def parse_time(text: Any) -> dt.datetime | None:
    """An ISO 8601 time from the daemon (UTC when it names no zone), or None."""
    if not isinstance(text, str) or not text:
        return None
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)


def limit_entries(conn: p.ConnectorStatus) -> list[dict]:
    """Every limit source with its value in A, the binding one marked (ties: the first); the
    charger/cable rating binds when no source is below allowed_a."""
    out: list[dict[str, Any]] = [{"source": source, "label": SOURCE_TEXT.get(source, source), "current_a": current,
                                  "binding": False} for source, current in sorted(conn.limits.items())]
    binding = next((e for e in out if e["current_a"] <= conn.allowed_a), None)
    if binding is not None:
        binding["binding"] = True
    else:
        out.insert(0, {"source": "rating", "label": "charger and cable rating", "current_a": conn.allowed_a,
                       "binding": True})
    return out


def fault_text(conn: p.ConnectorStatus, now: dt.datetime, tz: dt.tzinfo) -> str:
    parts = []
    for f in conn.faults:
        text = FAULT_TEXT.get(f.fault, f.fault.replace("_", " "))
        if f.lockout:
            text += ", locked out until a person clears it"
        elif f.retry_in_s is not None:
            text += f", retry at {clock(now + dt.timedelta(seconds=f.retry_in_s), tz)}"
        parts.append(text)
    return "Fault: " + "; ".join(parts)


def session_cost(session: p.SessionNow) -> tuple[float, str] | None:
    """The driver's price so far, when the charger has a tariff."""
    return None if session.price is None else (session.price, session.currency or "")


def headline(conn: p.ConnectorStatus, now: dt.datetime, tz: dt.tzinfo) -> tuple[str, str]:
    """(the sentence a person reads, a tone for its colour: idle, busy, charging, paused, fault, off)."""
    status, reason, session = conn.status, conn.reason, conn.session
    if conn.faults:
        return fault_text(conn, now, tz), "fault"
    if conn.pilot_error:  # the pilot's device is gone (an unplugged adapter): nothing can charge
        return "Pilot unavailable: " + conn.pilot_error, "fault"
    if status == "Charging" and session:
        text = f"Charging {kw(session.power_w)}, {kwh(session.energy_wh)}"
        cost = session_cost(session)
        return text + (f", {money(*cost)} so far" if cost else " so far"), "charging"
    if status == "SuspendedEVSE" and session:
        return _paused(conn, reason), "paused"
    if status == "SuspendedEV" and session:
        return "Connected; the EV is not asking for power", "paused"
    if session:
        return ("Starting: " + reason) if reason else "Starting", "busy"
    if status == "Unavailable":
        return "Unavailable", "off"
    if status == "Finishing":
        return "Session ended; unplug the EV", "busy"
    if status == "Reserved":
        return "Reserved", "busy"
    if reason.startswith("card refused"):
        return "Card " + reason[5:], "busy"
    if reason == "waiting for a card":
        return "Waiting for a card", "busy"
    if reason == "authorized; waiting for the EV":
        return "Card accepted; plug in the EV", "busy"
    if reason == "waiting for authorization":
        return "Checking the card", "busy"
    if status == "Available":
        return "Available", "idle"
    return (reason[:1].upper() + reason[1:]) if reason else status, "busy"


def _paused(conn: p.ConnectorStatus, reason: str) -> str:
    binding = next((e for e in limit_entries(conn) if e["binding"]), None)
    if binding and binding["current_a"] < 6:
        text = f"Paused by {binding['label']}"
        return text + (f" ({binding['current_a']:g} A)" if binding["current_a"] > 0 else "")
    return "Paused: " + reason if reason else "Paused"


def connector_view(conn: p.ConnectorStatus, now: dt.datetime, tz: dt.tzinfo, *, show_tags: bool) -> dict:
    """One connector as the page renders it; card UIDs only for a logged-in host."""
    text, tone = headline(conn, now, tz)
    session = conn.session
    out: dict[str, Any] = {
        "id": conn.id, "headline": text, "tone": tone, "status": conn.status,
        "state": conn.state, "reason": conn.reason,
        "offered_a": conn.offered_a, "allowed_a": conn.allowed_a,
        "contactor": conn.contactor, "current_a": list(conn.measured.current_a) if conn.measured else [],
        "limits": [{"source": e["source"], "label": e["label"], "current_a": e["current_a"], "until": None,
                    "binding": e["binding"]} for e in limit_entries(conn)],
        "session": None,
    }
    if session:
        started = parse_time(session.started_at)
        cost = session_cost(session)
        out["session"] = {
            "key": session.started_at,
            "card": session.card_name or (session.id_tag if show_tags else mask(session.id_tag)),
            "started": clock(started, tz) if started else "",
            "energy": kwh(session.energy_wh), "power": kw(session.power_w),
            "cost": money(*cost) if cost else None,
        }
    return out


def mask(id_tag: Any) -> str:
    """A card UID as an anonymous viewer sees it: enough to tell cards apart, not to clone one."""
    text = str(id_tag or "")
    return "…" + text[-4:] if len(text) > 4 else text


def page_view(hello: p.HelloReply, status: p.StatusReply | None, totals: dict, now: dt.datetime, tz: dt.tzinfo,
              *, show_tags: bool, online: bool, title: str = "") -> dict:
    """The whole page's live part."""
    return {
        "title": title or hello.charger or "evsed",
        "online": online and status is not None,
        "now": clock(now, tz),
        "connectors": [connector_view(c, now, tz, show_tags=show_tags) for c in status.connectors] if status else [],
        "reader_error": status.card_reader_error or None if status else None,
        "mode": status.mode if status else None,
        "totals": totals,
    }
