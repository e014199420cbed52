"""The cards, groups and time windows in force, as the logged-in owner's page shows them: read
from the config the web service loaded (again after the owner saved a learned card).
"""

from __future__ import annotations

import calendar
from typing import Any

from evsed.config import Config


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def rules_view(config: Config) -> dict[str, Any]:
    """Cards (UIDs included: only a logged-in owner is shown this), groups and windows."""
    policy = config.policy
    return {
        "cards": [{"uid": c.uid, "name": c.name, "group": c.group, "enabled": c.enabled,
                   "expires": c.expires.isoformat() if c.expires else None} for c in config.cards],
        "groups": [{"name": g.name, "max_current_a": g.max_current_a, "mode": g.mode, "stop_by": g.stop_by}
                   for g in policy.groups.values()]
                  + [{"name": name, "max_current_a": None, "mode": None, "stop_by": "card"}  # named by cards only
                     for name in sorted({c.group for c in config.cards if c.group} - set(policy.groups))],
        "windows": [_window(w, w.action.value) for w in policy.schedule.windows]
                   + [_window(m.window, "mode", m.mode) for m in policy.mode_windows],  # those that switch the mode
    }


def _window(w: Any, action: str, mode: str | None = None) -> dict[str, Any]:
    """One window (the core's windows.Window, which the web may not import) as the table shows it."""
    return {"name": w.name, "days": [calendar.day_abbr[d].lower() for d in sorted(w.days)], "start": _hhmm(w.start_min),
            "end": _hhmm(w.end_min), "action": action, "mode": mode, "max_current_a": w.max_current_a,
            "groups": sorted(w.groups)}
