"""What the page shows, derived from the daemon's status reply: pure functions, time passed in.

A connector's status (docs/protocol.md `status`) becomes the sentence a person reads
("Charging 7.2 kW, 12.4 kWh, €3.10 so far"), its limits a table with the binding one marked.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from evsed.web.i18n import ENGLISH, Messages

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


def source_label(source: str, msgs: Messages = ENGLISH) -> str:
    key = f"view.source.{source}"
    text = msgs(key)
    return source if text == key else text


def limit_entries(conn: dict, msgs: Messages = ENGLISH) -> list[dict]:
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
        out.append({"source": source, "label": source_label(source, msgs), "current_a": float(current),
                    "until": until, "binding": False})
    if allowed is not None:
        binding = next((e for e in out if e["current_a"] <= allowed), None)
        if binding is not None:
            binding["binding"] = True
        else:
            out.insert(0, {"source": "rating", "label": msgs("view.rating"), "current_a": float(allowed),
                           "until": None, "binding": True})
    return out


def _until(conn: dict, source: str, entries: list[dict]) -> dt.datetime | None:
    entry = next((e for e in entries if e["source"] == source), None)
    if entry and entry["until"]:
        return entry["until"]
    return parse_time((conn.get("limit_until") or {}).get(source))


def fault_text(conn: dict, now: dt.datetime, tz: dt.tzinfo, msgs: Messages = ENGLISH) -> str:
    """Which faults hold and how each clears ("RCD tripped, retry at 14:05")."""
    parts = []
    for f in conn.get("faults") or []:
        name = str(f.get("fault", "unknown"))
        key = f"view.fault.{name}"
        text = msgs(key) if msgs(key) != key else name.replace("_", " ")
        if f.get("lockout"):
            text = msgs("view.fault_lockout", fault=text)
        elif f.get("retry_in_s") is not None:
            text = msgs("view.fault_retry", fault=text,
                        time=clock(now + dt.timedelta(seconds=float(f["retry_in_s"])), tz))
        parts.append(text)
    return msgs("view.fault", faults="; ".join(parts))


def session_cost(session: dict) -> tuple[float, str] | None:
    """The driver's price so far, when the daemon reports one (tariffs come with the policy work)."""
    for key in ("price", "cost"):
        value = session.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value), str(session.get("currency", ""))
    return None


def headline(conn: dict, now: dt.datetime, tz: dt.tzinfo, msgs: Messages = ENGLISH) -> tuple[str, str]:
    """(the sentence a person reads, a tone for its colour: idle, busy, charging, paused, fault, off)."""
    status = conn.get("status", "")
    reason = conn.get("reason") or ""
    session = conn.get("session")
    if conn.get("faults"):
        return fault_text(conn, now, tz, msgs), "fault"
    if conn.get("pilot_error"):  # the pilot's device is gone (an unplugged adapter): nothing can charge
        return msgs("view.pilot_unavailable", why=str(conn["pilot_error"])[:200]), "fault"
    if status == "Charging" and session:
        text = msgs("view.charging", power=kw(session.get("power_w") or 0), energy=kwh(session.get("energy_wh") or 0))
        cost = session_cost(session)
        return (msgs("view.so_far_cost", text=text, cost=money(*cost)) if cost
                else msgs("view.so_far", text=text)), "charging"
    if status == "SuspendedEVSE" and session:
        return _paused(conn, reason, now, tz, msgs), "paused"
    if status == "SuspendedEV" and session:
        return msgs("view.ev_not_asking"), "paused"
    if session:
        return (msgs("view.starting_why", why=reason) if reason else msgs("view.starting")), "busy"
    if status == "Unavailable":
        return msgs("view.unavailable"), "off"
    if status == "Finishing":
        return msgs("view.finishing"), "busy"
    if status == "Reserved":
        return msgs("view.reserved"), "busy"
    if reason.startswith("card refused"):
        return msgs("view.card_refused", why=reason[5:]), "busy"
    known = {"waiting for a card": "view.waiting_card", "authorized; waiting for the EV": "view.card_accepted",
             "waiting for authorization": "view.checking_card"}
    if reason in known:
        return msgs(known[reason]), "busy"
    if status == "Available":
        return msgs("view.available"), "idle"
    return (reason[:1].upper() + reason[1:]) if reason else status, "busy"


def _paused(conn: dict, reason: str, now: dt.datetime, tz: dt.tzinfo, msgs: Messages) -> str:
    entries = limit_entries(conn, msgs)
    binding = next((e for e in entries if e["binding"]), None)
    if binding and binding["current_a"] < 6:
        until = _until(conn, binding["source"], entries)
        text = (msgs("view.paused_by_amps", source=binding["label"], amps=f"{binding['current_a']:g}")
                if binding["current_a"] > 0 else msgs("view.paused_by", source=binding["label"]))
        return msgs("view.until", text=text, time=clock(until, tz)) if until else text
    return msgs("view.paused_why", why=reason) if reason else msgs("view.paused")


def measured_now(conn: dict) -> bool:
    """Whether the connector's measured current is the EV's now: the contactor is closed and the
    meter's last read succeeded (a fault, a pause or a silent meter leaves a stale reading)."""
    return (conn.get("contactor") == "closed" and not conn.get("faults") and not conn.get("meter_error")
            and not conn.get("pilot_error"))


def connector_view(conn: dict, now: dt.datetime, tz: dt.tzinfo, *, show_tags: bool,
                   msgs: Messages = ENGLISH) -> dict:
    """One connector as the page renders it; card UIDs only for a logged-in host. The plot and the
    measured current only while they are the EV's now (measured_now)."""
    text, tone = headline(conn, now, tz, msgs)
    live = measured_now(conn)
    session = conn.get("session")
    measured = conn.get("measured") or {}
    out: dict[str, Any] = {
        "id": conn.get("id"), "headline": text, "tone": tone, "status": conn.get("status"),
        "state": conn.get("state"), "reason": conn.get("reason") or "",
        "offered_a": conn.get("offered_a"), "allowed_a": conn.get("allowed_a"),
        "contactor": conn.get("contactor"), "current_a": (measured.get("current_a") or []) if live else [],
        "plot": live or (tone == "paused" and not conn.get("meter_error")),
        "unavailable_pending": conn.get("operative") is False and conn.get("status") != "Unavailable",
        "max_a": _hardware_a(conn),
        "web_limit_a": _limit_a((conn.get("limits") or {}).get("web")),
        "limits": [{"source": e["source"], "label": e["label"], "current_a": e["current_a"],
                    "until": clock(e["until"], tz) if e["until"] else None, "binding": e["binding"]}
                   for e in limit_entries(conn, msgs)],
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


def _limit_a(value: Any) -> float | None:
    current = value.get("current_a") if isinstance(value, dict) else value
    return float(current) if isinstance(current, (int, float)) and not isinstance(current, bool) else None


def _hardware_a(conn: dict) -> float | None:
    """The most the slider may ask: the charger's rating (the chain's hardware source)."""
    chain = conn.get("limit_chain") or {}
    hardware = chain.get("hardware") if isinstance(chain, dict) else None
    return _limit_a(hardware) or _limit_a(conn.get("allowed_a"))


def solar_view(status: dict | None) -> dict | None:
    """In a solar mode with a site meter: the surplus, what the EVs take and the grid's share, W."""
    if not status or status.get("mode") not in ("solar", "min+solar") or not status.get("site"):
        return None
    site_w = status["site"].get("power_w")
    if not isinstance(site_w, (int, float)):
        return None
    ev_w = sum(float((c.get("session") or {}).get("power_w") or 0) for c in status.get("connectors") or [])
    grid_w = max(0.0, float(site_w))  # import is the grid's share; export is surplus left over
    return {"ev_w": round(ev_w), "grid_w": round(grid_w), "surplus_w": round(max(0.0, ev_w - float(site_w)))}


def mask(id_tag: Any) -> str:
    """A card UID as an anonymous viewer sees it: enough to tell cards apart, not to clone one."""
    text = str(id_tag or "")
    return "…" + text[-4:] if len(text) > 4 else text


def page_view(hello: dict, status: dict | None, totals: dict, now: dt.datetime, tz: dt.tzinfo,
              *, show_tags: bool, online: bool, title: str = "", msgs: Messages = ENGLISH) -> dict:
    """The whole page's live part, in the language of msgs."""
    connectors = (status or {}).get("connectors") or []
    return {
        "title": title or str(hello.get("charger") or "evsed"),
        "online": online and status is not None,
        "now": clock(now, tz),
        "connectors": [connector_view(c, now, tz, show_tags=show_tags, msgs=msgs) for c in connectors],
        "reader_error": (status or {}).get("card_reader_error"),
        "mode": (status or {}).get("mode"),
        "modes": (status or {}).get("modes"),
        "solar": solar_view(status),
        "totals": totals,
    }
