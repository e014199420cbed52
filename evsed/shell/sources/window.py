"""The time-of-use window source: the window decision (evsed.core.windows) as a Limit whose
detail says until when, in the charger's local time."""

from __future__ import annotations

import datetime as dt

from evsed.core import limits as lm
from evsed.core import windows


def limit(d: windows.Decision, tz: dt.tzinfo) -> lm.Limit:
    """A forbidding window blocks with its reason; a capping one sets its cap."""
    return lm.window(d.allowed, d.cap_a, text(d, tz))


def text(d: windows.Decision, tz: dt.tzinfo) -> str:
    if d.until_utc is None:
        return d.reason
    local = d.until_utc.astimezone(tz).strftime("%H:%M")
    return f"paused by window until {local} ({d.reason})" if not d.allowed else f"{d.reason} until {local}"
