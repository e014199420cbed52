"""The limits set by commands: the OCPP uplink's composite schedule (`ocpp`), and the web page's,
MQTT's and an administrator's ceilings, each under its own source name."""

from __future__ import annotations

from evsed.core import limits as lm


def limit(source: str, current_a: float | None) -> lm.Limit:
    """A `limit` command's ceiling (None lifts it: the link leaves the chain)."""
    if source == "ocpp":
        return lm.ocpp(current_a)
    return lm.Limit(source, current_a, "set by command" if current_a is not None else "")
