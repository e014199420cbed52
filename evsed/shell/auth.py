"""Local authorization: the host's card list from the config (whitelist).

Pure lookups; the uplink adds OCPP's local list, cache and online Authorize later.
"""

from __future__ import annotations

import datetime as dt

from evsed.config import Card
from evsed.core.events import AuthorizationResult


class LocalAuthorizer:
    def __init__(self, cards: tuple[Card, ...]):
        self.cards = {card.uid: card for card in cards}

    def card(self, id_tag: str) -> Card | None:
        return self.cards.get(id_tag)

    def authorize(self, id_tag: str, today: dt.date) -> AuthorizationResult:
        """Accept a known, enabled, unexpired card; `today` is the charger's local date."""
        card = self.cards.get(id_tag)
        if card is None:
            return AuthorizationResult(id_tag, False, "unknown card")
        if not card.enabled:
            return AuthorizationResult(id_tag, False, "card disabled")
        if card.expires is not None and today > card.expires:
            return AuthorizationResult(id_tag, False, f"card expired on {card.expires.isoformat()}")
        return AuthorizationResult(id_tag, True, "", "local")
