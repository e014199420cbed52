"""What the page shows, derived from the daemon's status reply: pure functions, time passed in.

A connector's status (docs/protocol.md `status`) becomes the sentence a person reads
("Charging 7.2 kW, 12.4 kWh, €3.10 so far"), its limits a table with the binding one marked.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

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


def limit_entries(conn: dict) -> list[dict]:
    """Every limit source with its value in A, the binding one marked (ties: the first).

    `limits` maps a source to A (or to {"current_a": A, "until": ISO} when a source says how long
    it holds); the charger/cable rating binds when no source is below allowed_a.
    """
    allowed = conn.get("allowed_a")
    out = []
    for source, value in sorted((conn.get("limits") or {}).items()):
        current = value.get("current_a") if isinstance(value, dict) else value
        if current is None:
            continue
        until = parse_time(value.get("until")) if isinstance(value, dict) else None
        out.append({"source": source, "label": SOURCE_TEXT.get(source, source), "current_a": float(current),
                    "until": until, "binding": False})
    if allowed is not None:
        binding = next((e for e in out if e["current_a"] <= allowed), None)
        if binding is not None:
            binding["binding"] = True
        else:
            out.insert(0, {"source": "rating", "label": "charger and cable rating", "current_a": float(allowed),
                           "until": None, "binding": True})
    return out


def _until(conn: dict, source: str, entries: list[dict]) -> dt.datetime | None:
    entry = next((e for e in entries if e["source"] == source), None)
    if entry and entry["until"]:
        return entry["until"]
    return parse_time((conn.get("limit_until") or {}).get(source))


def fault_text(conn: dict, now: dt.datetime, tz: dt.tzinfo) -> str:
    parts = []
    for f in conn.get("faults") or []:
        text = FAULT_TEXT.get(f.get("fault"), str(f.get("fault", "unknown")).replace("_", " "))
        if f.get("lockout"):
            text += ", locked out until a person clears it"
        elif f.get("retry_in_s") is not None:
            text += f", retry at {clock(now + dt.timedelta(seconds=float(f['retry_in_s'])), tz)}"
        parts.append(text)
    return "Fault: " + "; ".join(parts)


def session_cost(session: dict) -> tuple[float, str] | None:
    """The driver's price so far, when the daemon reports one (tariffs come with the policy work)."""
    for key in ("price", "cost"):
        value = session.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value), str(session.get("currency", ""))
    return None


def headline(conn: dict, now: dt.datetime, tz: dt.tzinfo) -> tuple[str, str]:
    """(the sentence a person reads, a tone for its colour: idle, busy, charging, paused, fault, off)."""
    status = conn.get("status", "")
    reason = conn.get("reason") or ""
    session = conn.get("session")
    if conn.get("faults"):
        return fault_text(conn, now, tz), "fault"
    if conn.get("pilot_error"):  # the pilot's device is gone (an unplugged adapter): nothing can charge
        return "Pilot unavailable: " + str(conn["pilot_error"])[:200], "fault"
    if status == "Charging" and session:
        text = f"Charging {kw(session.get('power_w') or 0)}, {kwh(session.get('energy_wh') or 0)}"
        cost = session_cost(session)
        return text + (f", {money(*cost)} so far" if cost else " so far"), "charging"
    if status == "SuspendedEVSE" and session:
        return _paused(conn, reason, now, tz), "paused"
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


def _paused(conn: dict, reason: str, now: dt.datetime, tz: dt.tzinfo) -> str:
    entries = limit_entries(conn)
    binding = next((e for e in entries if e["binding"]), None)
    if binding and binding["current_a"] < 6:
        until = _until(conn, binding["source"], entries)
        text = f"Paused by {binding['label']}"
        if binding["current_a"] > 0:
            text += f" ({binding['current_a']:g} A)"
        return text + (f" until {clock(until, tz)}" if until else "")
    return "Paused: " + reason if reason else "Paused"


def connector_view(conn: dict, now: dt.datetime, tz: dt.tzinfo, *, show_tags: bool) -> dict:
    """One connector as the page renders it; card UIDs only for a logged-in host."""
    text, tone = headline(conn, now, tz)
    session = conn.get("session")
    measured = conn.get("measured") or {}
    out: dict[str, Any] = {
        "id": conn.get("id"), "headline": text, "tone": tone, "status": conn.get("status"),
        "state": conn.get("state"), "reason": conn.get("reason") or "",
        "offered_a": conn.get("offered_a"), "allowed_a": conn.get("allowed_a"),
        "contactor": conn.get("contactor"), "current_a": measured.get("current_a") or [],
        "limits": [{"source": e["source"], "label": e["label"], "current_a": e["current_a"],
                    "until": clock(e["until"], tz) if e["until"] else None, "binding": e["binding"]}
                   for e in limit_entries(conn)],
        "session": None,
    }
    if session:
        started = parse_time(session.get("started_at"))
        cost = session_cost(session)
        out["session"] = {
            "key": session.get("started_at"),
            "card": session.get("card_name") or (session.get("id_tag") if show_tags else mask(session.get("id_tag"))),
            "started": clock(started, tz) if started else "",
            "energy": kwh(session.get("energy_wh") or 0), "power": kw(session.get("power_w") or 0),
            "cost": money(*cost) if cost else None,
        }
    return out


def mask(id_tag: Any) -> str:
    """A card UID as an anonymous viewer sees it: enough to tell cards apart, not to clone one."""
    text = str(id_tag or "")
    return "…" + text[-4:] if len(text) > 4 else text


def page_view(hello: dict, status: dict | None, totals: dict, now: dt.datetime, tz: dt.tzinfo,
              *, show_tags: bool, online: bool, title: str = "") -> dict:
    """The whole page's live part."""
    connectors = (status or {}).get("connectors") or []
    return {
        "title": title or str(hello.get("charger") or "evsed"),
        "online": online and status is not None,
        "now": clock(now, tz),
        "connectors": [connector_view(c, now, tz, show_tags=show_tags) for c in connectors],
        "reader_error": (status or {}).get("card_reader_error"),
        "mode": (status or {}).get("mode"),
        "totals": totals,
    }
