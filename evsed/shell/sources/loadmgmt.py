"""The load management source: a connector's share of the site (evsed.core.loadmgmt's offer,
decided by evsed.shell.policy) as the `site` Limit."""

from __future__ import annotations

from evsed.core import limits as lm
from evsed.core import loadmgmt


def limit(offer: loadmgmt.Offer | None) -> lm.Limit:
    """None: no session, the connector waits for its offer (0 A)."""
    if offer is None:
        return lm.site(0.0, "no session: waiting for an offer")
    return lm.site(offer.current_a, offer.reason)
