"""What the page shows, derived from the daemon's status reply: pure functions, time passed in.

A connector's status (docs/protocol.md `status`) becomes the sentence a person reads
("Charging 7.2 kW, 12.4 kWh, €3.10 so far"), its limits a table with the binding one marked.
"""

from __future__ import annotations

import datetime as dt
import zlib
from dataclasses import replace
from typing import Any

from evsed import protocol as p
from evsed.web.faults import clock, fault_text, problem_text
from evsed.web.i18n import ENGLISH, Messages

CURRENCY_SIGN = {"EUR": "€", "GBP": "£", "USD": "$", "CHF": "CHF ", "SEK": "SEK ", "NOK": "NOK ", "DKK": "DKK "}


def kw(power_w: float) -> str:
    return f"{power_w / 1000:.1f} kW"


def kwh(energy_wh: float) -> str:
    return f"{energy_wh / 1000:.1f} kWh"


def money(amount: float, currency: str) -> str:
    sign = CURRENCY_SIGN.get(currency.upper(), currency.upper() + " " if currency else "")
    return f"{sign}{amount:.2f}"


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


def status_label(status: str, msgs: Messages = ENGLISH) -> str:
    """A connector's status (OCPP's name: SuspendedEVSE) in the page's language; as given when unknown."""
    key = f"view.status.{status}"
    text = msgs(key)
    return status if text == key else text


def limit_entries(conn: p.ConnectorStatus, msgs: Messages = ENGLISH) -> list[dict]:
    """The daemon's limit chain in its order: every source that sets a ceiling (a blocking one at
    0 A), with its value in A, and the binding one marked as the daemon marks it."""
    ceilings = conn.limits
    return [{"source": link.source, "label": source_label(link.source, msgs), "current_a": ceilings[link.source],
             "binding": link.binding} for link in conn.limit_chain if link.source in ceilings]


def session_cost(session: p.SessionNow) -> tuple[float, str] | None:
    """The driver's price so far, when the charger has a tariff."""
    return None if session.price is None else (session.price, session.currency or "")


def headline(conn: p.ConnectorStatus, now: dt.datetime, tz: dt.tzinfo,
             msgs: Messages = ENGLISH) -> tuple[str, str]:
    """(the sentence a person reads, a tone for its colour: idle, busy, charging, paused, fault, off)."""
    status, reason, session = conn.status, conn.reason, conn.session
    problem = problem_text(conn, now, tz, msgs)  # a fault, or the pilot's device gone: nothing can charge
    if problem:
        return (fault_text(conn, now, tz, msgs) if conn.faults else problem), "fault"
    if status == "Charging" and session:
        text = msgs("view.charging", power=kw(session.power_w), energy=kwh(session.energy_wh))
        cost = session_cost(session)
        return (msgs("view.so_far_cost", text=text, cost=money(*cost)) if cost
                else msgs("view.so_far", text=text)), "charging"
    if status == "SuspendedEVSE" and session:
        return _paused(conn, reason, msgs), "paused"
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


def _paused(conn: p.ConnectorStatus, reason: str, msgs: Messages) -> str:
    binding = next((e for e in limit_entries(conn, msgs) if e["binding"]), None)
    if binding and binding["current_a"] < 6:
        if binding["current_a"] > 0:
            return msgs("view.paused_by_amps", source=binding["label"], amps=f"{binding['current_a']:g}")
        return msgs("view.paused_by", source=binding["label"])
    return msgs("view.paused_why", why=reason) if reason else msgs("view.paused")


def measured_now(conn: p.ConnectorStatus) -> bool:
    """Whether the connector's measured current is the EV's now: the contactor is closed and the
    meter's last read succeeded (a fault, a pause or a silent meter leaves a stale reading)."""
    return conn.contactor == "closed" and not conn.faults and not conn.meter_error and not conn.pilot_error


def _hardware_a(conn: p.ConnectorStatus) -> float:
    """The most the slider may ask: the charger's rating (the chain's hardware source)."""
    hardware = conn.link("hardware")
    return hardware.current_a if hardware is not None and hardware.current_a is not None else conn.allowed_a


def connector_view(conn: p.ConnectorStatus, now: dt.datetime, tz: dt.tzinfo, *, show_tags: bool,
                   msgs: Messages = ENGLISH) -> dict:
    """One connector as the page renders it; card UIDs only for a logged-in host. The plot and the
    measured current only while they are the EV's now (measured_now)."""
    text, tone = headline(conn, now, tz, msgs)
    session, live = conn.session, measured_now(conn)
    out: dict[str, Any] = {
        "id": conn.id, "headline": text, "tone": tone, "status": conn.status,
        "status_text": status_label(conn.status, msgs),
        "state": conn.state, "reason": conn.reason,
        "offered_a": conn.offered_a, "allowed_a": conn.allowed_a,
        "contactor": conn.contactor, "current_a": list(conn.measured.current_a) if conn.measured and live else [],
        "plot": live or (tone == "paused" and not conn.meter_error),
        "unavailable_pending": not conn.operative and conn.status != "Unavailable",
        "max_a": _hardware_a(conn), "web_limit_a": conn.limits.get("web"),
        "limits": [{"source": e["source"], "label": e["label"], "current_a": e["current_a"], "until": None,
                    "binding": e["binding"]} for e in limit_entries(conn, msgs)],
        "session": None,
        "plan": plan_view(conn.plan, tz, msgs),
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


def plan_view(plan: p.PlanNow | None, tz: dt.tzinfo, msgs: Messages = ENGLISH) -> dict | None:
    """A connector's charging plan in the page's words: what, by when, what it does now, when it
    finishes and what it costs; `version` changes when its chart (/plan/<n>.svg) does."""
    if plan is None:
        return None
    by = parse_time(plan.by)
    by_text, energy = clock(by, tz) if by else "", kwh(plan.energy_wh)
    first = plan.slots[0] if plan.slots else None
    when = {"waiting": parse_time(first.start) if first else None, "charging": parse_time(first.end) if first else None,
            "done": by, "infeasible": by}.get(plan.state)
    words = msgs(f"view.plan.{plan.state}", energy=energy, time=clock(when, tz) if when else by_text)
    finish = parse_time(plan.finish)
    line = "" if finish is None or plan.cost is None else msgs(
        "view.plan.finish", delivered=kwh(plan.delivered_wh), time=clock(finish, tz),
        cost=money(plan.cost, plan.currency))
    return {"text": msgs("view.plan", energy=energy, time=by_text), "state": plan.state, "words": words, "line": line,
            "chart": plan.state != "pending", "version": f"{zlib.crc32(repr(plan.slots).encode()):08x}"}


def solar_view(status: p.StatusReply | None) -> dict | None:
    """In a solar mode with a site meter: the surplus, what the EVs take and the grid's share of it, W.
    The site meter sees the house, the sun and the EVs together: what it imports, up to what the EVs
    draw, is the grid's share, as the daemon splits a session's energy (Charger.grid_share); the
    surplus is what the sun gives beyond the house (the EVs' draw less the import). None from a stale
    reading: an old import is not shown as now's."""
    if status is None or status.mode not in ("solar", "min+solar") or status.site is None or status.site.stale:
        return None
    site_w = float(status.site.power_w)
    ev_w = sum(max(0.0, float(c.session.power_w)) for c in status.connectors if c.session)
    grid_w = min(max(0.0, site_w), ev_w)
    return {"ev_w": round(ev_w), "grid_w": round(grid_w), "surplus_w": round(max(0.0, ev_w - site_w))}


def mask(id_tag: Any) -> str:
    """A card UID as an anonymous viewer sees it: enough to tell cards apart, not to clone one."""
    text = str(id_tag or "")
    return "…" + text[-4:] if len(text) > 4 else text


def _operator_cost(conn: p.ConnectorStatus, status: p.StatusReply) -> p.ConnectorStatus:
    """A session's price as the network operator last told it (OCPP 2.0.1 CostUpdated, which the
    uplink reports in its service status): what the driver pays, in place of the local tariff's."""
    uplink = status.services.get("ocpp")
    cost = uplink.costs.get(str(conn.id)) if uplink is not None else None
    if cost is None or conn.session is None:
        return conn
    return replace(conn, session=replace(conn.session, price=cost))


def page_view(hello: p.HelloReply, status: p.StatusReply | None, totals: dict, now: dt.datetime, tz: dt.tzinfo,
              *, show_tags: bool, online: bool, title: str = "", msgs: Messages = ENGLISH) -> dict:
    """The whole page's live part, in the language of msgs."""
    return {
        "title": title or hello.charger or "evsed",
        "online": online and status is not None,
        "now": clock(now, tz),
        "connectors": [connector_view(_operator_cost(c, status), now, tz, show_tags=show_tags, msgs=msgs)
                       for c in status.connectors] if status else [],
        "reader_error": status.card_reader_error or None if status else None,
        "mode": status.mode if status else None,
        "modes": list(status.modes) if status else None,  # only these are offered
        "solar": solar_view(status),
        "totals": totals,
    }
