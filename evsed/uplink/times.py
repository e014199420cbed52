"""OCPP date-times: ISO 8601 in UTC with milliseconds at most, parsed to POSIX seconds and back,
and the rule that a transaction's times never go backwards."""

from __future__ import annotations

import datetime as dt


def parse_time(text: str) -> float:
    """POSIX seconds of an ISO 8601 time (no offset: UTC); raises ValueError."""
    value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return value.timestamp()


def iso(ts: float) -> str:
    """UTC, millisecond precision at most."""
    moment = dt.datetime.fromtimestamp(ts, dt.timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def ms(text: object) -> str | None:
    """An event's ISO 8601 time as OCPP wants it (UTC, milliseconds); None when absent or unreadable."""
    if not isinstance(text, str) or not text:
        return None
    try:
        return iso(parse_time(text))
    except ValueError:
        return None
