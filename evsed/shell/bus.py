"""Charger events and their subscribers: everything the charger does is published here once.

The connector performs the hardware action (contactor first) and only then publishes; a
subscriber's exception is logged and never reaches the safety path. In-process subscribers
are the log and the store; services get the durable events over the control socket.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Callable

import structlog

from evsed import protocol as p

log = structlog.get_logger("evsed")

_LEVELS = {"fault.raised": "error", "card.refused": "warning", "meter.garbage": "warning",
           "meter.rebaselined": "warning", "session.sample": "debug", "site.sample": "debug",
           "subscriber.failed": "error", "fault.cleared_by_person": "warning",
           "session.clock_corrected": "warning"}


def utc_iso_ms(when: dt.datetime) -> str:
    """ISO 8601 UTC with milliseconds and a Z, as OCPP wants its timestamps."""
    return when.astimezone(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class ChargerEvent:
    """One thing that happened: `type` is its name (`contactor.opened`), connector 0 the charger."""

    type: str
    connector: int
    at: dt.datetime  # wall clock, aware
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def durable(self) -> bool:
        """Kept in the store's outbox and streamed with a sequence number (the protocol's record
        says); the rest are live only (meter samples every second would wear an SD card)."""
        kind = p.EVENTS.get(self.type)
        return kind is not None and kind.DURABLE

    def wire(self, seq: int | None = None) -> p.Event:
        """The event as the control socket sends it (docs/protocol.md); raises WireError (a
        field out of its bounds) or KeyError (a type the protocol does not know)."""
        try:
            return p.EVENTS[self.type](seq=seq, at=utc_iso_ms(self.at), connector=self.connector, **self.data)
        except TypeError as exc:  # a field missing or unknown
            raise p.WireError(f"{self.type}: {exc}") from None


Subscriber = Callable[[ChargerEvent], None]


class Bus:
    """Publishes each event to every subscriber in order; a failing subscriber is logged, not fatal."""

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Add a subscriber; returns the function that removes it."""
        self._subscribers.append(subscriber)
        return lambda: self._subscribers.remove(subscriber) if subscriber in self._subscribers else None

    def publish(self, event: ChargerEvent) -> None:
        for subscriber in list(self._subscribers):
            try:
                subscriber(event)
            except Exception as exc:  # noqa: BLE001 - a subscriber never stops charging
                log.error("subscriber.failed", subscriber=getattr(subscriber, "__qualname__", repr(subscriber)),
                          event_type=event.type, error=repr(exc))


def log_event(event: ChargerEvent) -> None:
    """The log subscriber: one structlog line per event, named as the event."""
    level = _LEVELS.get(event.type, "info")
    fields = {"connector": event.connector, **event.data} if event.connector else dict(event.data)
    getattr(log, level)(event.type, **fields)
