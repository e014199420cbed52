"""The solar surplus source: the solar controller's offer (evsed.core.loadmgmt.solar_step) as a
Limit; it steps aside while a charging plan's slot charges from the grid."""

from __future__ import annotations

from evsed.core import limits as lm
from evsed.core import loadmgmt


def limit(offer: loadmgmt.SolarOffer, lifted_by_plan: bool) -> lm.Limit:
    if lifted_by_plan:
        return lm.solar(None, "steps aside in the charging plan's slot")
    return lm.solar(offer.current_a, offer.reason)
