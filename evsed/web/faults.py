"""The words for what keeps a connector from charging: its latched faults and how each clears, or a
pilot device that is gone. The page's headline and MQTT's fault sensor say them (the service imports
this, not the page's whole view).
"""

from __future__ import annotations

import datetime as dt

from evsed import protocol as p
from evsed.web.i18n import ENGLISH, Messages


def clock(when: dt.datetime, tz: dt.tzinfo) -> str:
    """HH:MM in the charger's time zone."""
    return when.astimezone(tz).strftime("%H:%M")


def faults_text(conn: p.ConnectorStatus, now: dt.datetime, tz: dt.tzinfo, msgs: Messages = ENGLISH) -> str:
    """Which faults hold and how each clears ("RCD tripped, retry at 14:05"); MQTT's fault sensor says it too."""
    parts = []
    for f in conn.faults:
        key = f"view.fault.{f.fault}"
        text = msgs(key) if msgs(key) != key else f.fault.replace("_", " ")
        if f.lockout:
            text = msgs("view.fault_lockout", fault=text)
        elif f.retry_in_s is not None:
            text = msgs("view.fault_retry", fault=text, time=clock(now + dt.timedelta(seconds=f.retry_in_s), tz))
        elif f.clears_by == "unplug":
            text = msgs("view.fault_unplug", fault=text)
        parts.append(text)
    return "; ".join(parts)


def fault_text(conn: p.ConnectorStatus, now: dt.datetime, tz: dt.tzinfo, msgs: Messages = ENGLISH) -> str:
    return msgs("view.fault", faults=faults_text(conn, now, tz, msgs))


def problem_text(conn: p.ConnectorStatus, now: dt.datetime, tz: dt.tzinfo, msgs: Messages = ENGLISH) -> str:
    """Why a connector cannot charge at all, or "": its latched faults, else a pilot device that is
    gone (an unplugged adapter). The page's headline and MQTT's fault sensor."""
    if conn.faults:
        return faults_text(conn, now, tz, msgs)
    if conn.pilot_error:
        return msgs("view.pilot_unavailable", why=conn.pilot_error)
    return ""
