"""Who may charge: a chain of authorizers asked in order, the host's card list first.

Each link answers accept, reject or unknown (with optional per-session limits). A link that
has not answered within the timeout counts as unknown; when every link says unknown, the
configured rule decides. The local list answers at once, so a known card costs no wait.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass
from typing import Callable, Protocol

import structlog

from evsed.config import AuthConfig, Card
from evsed.core.events import AuthorizationResult

log = structlog.get_logger("evsed")


@dataclass(frozen=True, slots=True)
class Verdict:
    """A link's answer: "accept", "reject" or "unknown", with what came with it."""

    result: str
    reason: str = ""
    group: str = ""
    max_current_a: float | None = None

    def as_result(self, id_tag: str, source: str) -> AuthorizationResult:
        return AuthorizationResult(id_tag, self.result == "accept", self.reason, source, self.group,
                                   self.max_current_a)


UNKNOWN = Verdict("unknown")


class Authorizer(Protocol):
    """One link of the chain. authorize() may be slow (a CSMS): the chain bounds it."""

    name: str

    async def authorize(self, id_tag: str, connector: int) -> Verdict: ...


class LocalList:
    """The host's card list from the config (whitelist): known cards only, answered at once.
    An accepted card carries its group and the group's cap, so they hold from the first second;
    a card outside its group's window is refused, saying until when."""

    name = "local"

    def __init__(self, cards: tuple[Card, ...], today: Callable[[], dt.date],
                 group_cap: Callable[[str], float | None] = lambda group: None,
                 outside_window: Callable[[str], str | None] = lambda group: None):
        self.cards = {card.uid: card for card in cards}
        self.today = today
        self.group_cap, self.outside_window = group_cap, outside_window

    def card(self, id_tag: str) -> Card | None:
        return self.cards.get(id_tag)

    def verdict(self, id_tag: str) -> Verdict:
        """Accept a known, enabled, unexpired card; the rest of the chain decides an unknown one."""
        card = self.cards.get(id_tag)
        if card is None:
            return UNKNOWN
        if not card.enabled:
            return Verdict("reject", "card disabled")
        if card.expires is not None and self.today() > card.expires:
            return Verdict("reject", f"card expired on {card.expires.isoformat()}")
        outside = self.outside_window(card.group) if card.group else None
        if outside is not None:
            return Verdict("reject", outside)
        return Verdict("accept", group=card.group, max_current_a=self.group_cap(card.group) if card.group else None)

    async def authorize(self, id_tag: str, connector: int) -> Verdict:
        return self.verdict(id_tag)


class Chain:
    """The links in order. request() answers through `done`: at once when the local list
    decides (or no later link exists), else from a task on the running loop."""

    def __init__(self, local: LocalList, config: AuthConfig):
        self.local, self.config = local, config
        self.links: list[Authorizer] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def add(self, link: Authorizer) -> Callable[[], None]:
        """Append a link (a service on the control socket); returns the function that removes it."""
        self.links.append(link)
        return lambda: self.links.remove(link) if link in self.links else None

    def card_name(self, id_tag: str) -> str:
        card = self.local.card(id_tag)
        return card.name if card else ""

    def request(self, id_tag: str, connector: int, done: Callable[[AuthorizationResult], None]) -> None:
        verdict = self.local.verdict(id_tag)
        if verdict.result != "unknown":
            done(verdict.as_result(id_tag, self.local.name))
        elif not self.links:
            done(self._unanswered(id_tag))
        else:
            task = asyncio.get_running_loop().create_task(self._ask_links(id_tag, connector, done))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _ask_links(self, id_tag: str, connector: int, done: Callable[[AuthorizationResult], None]) -> None:
        for link in list(self.links):
            verdict = await self._ask(link, id_tag, connector)
            if verdict.result in ("accept", "reject"):
                done(verdict.as_result(id_tag, link.name))
                return
        done(self._unanswered(id_tag))

    async def _ask(self, link: Authorizer, id_tag: str, connector: int) -> Verdict:
        try:
            async with asyncio.timeout(self.config.timeout_s):
                verdict = await link.authorize(id_tag, connector)
        except TimeoutError:
            log.warning("authorization.timeout", link=link.name, id_tag=id_tag)
            return UNKNOWN
        except Exception as exc:  # noqa: BLE001 - a broken link is a link that does not know
            log.error("authorization.link_failed", link=link.name, error=repr(exc))
            return UNKNOWN
        if verdict.result not in ("accept", "reject", "unknown"):
            log.warning("authorization.garbage", link=link.name, result=verdict.result)
            return UNKNOWN
        return verdict

    def _unanswered(self, id_tag: str) -> AuthorizationResult:
        accept = self.config.unanswered == "accept"
        return AuthorizationResult(id_tag, accept, "" if accept else "unknown card", "unanswered")

    def cancel(self) -> None:
        for task in self._tasks:
            task.cancel()

