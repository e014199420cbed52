"""The durable outbound queue's sender, whatever the OCPP version: the head of the queue goes
first, once its retry time has come; a message the CSMS refuses is retried or dropped (counted).

The version's deliver() sends one item and dequeues it in the same SQLite transaction as what
its answer changes; it raises Refused for an answer that costs an attempt, and lets a lost
connection propagate (that costs none: the item is sent again after reconnecting)."""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable

import structlog

from evsed.uplink.aio import wait_event
from evsed.uplink.state import Queued, State

log = structlog.get_logger("evsed.uplink")


class Refused(Exception):
    """The CSMS answered a CALLERROR, or did not answer in time: one attempt spent."""


class Sender:
    def __init__(self, state: State, clock: Callable[[], float], attempts: Callable[[], int],
                 retry_interval_s: Callable[[], int]):
        self.state, self.clock = state, clock
        self.attempts, self.retry_interval_s = attempts, retry_interval_s
        self.wake = asyncio.Event()                  # the queue may have work
        self.dropped = int(state.meta("dropped", "0"))
        self._changed = asyncio.Condition()          # an item left the queue

    async def run(self, deliver: Callable[[Queued], Awaitable[None]]) -> None:
        """Send the queue in order, for ever (while one connection lasts)."""
        while True:
            self.wake.clear()
            item = self.state.head()
            if item is None:
                await self.wake.wait()
                continue
            wait = item.next_at - self.clock()
            if wait > 0:
                await wait_event(self.wake, wait)
                continue
            try:
                await deliver(item)
            except Refused as exc:
                self._failed(item, str(exc))
            async with self._changed:
                self._changed.notify_all()

    async def drained(self, tx_only: bool, timeout_s: float) -> bool:
        """Until no (transaction) message is queued, or timeout_s passed: whether it was drained."""
        def done() -> bool:
            return not any(q.tx or not tx_only for q in self.state.queued())
        try:
            async with asyncio.timeout(timeout_s):
                async with self._changed:
                    await self._changed.wait_for(done)
            return True
        except TimeoutError:
            return False

    def drop(self, item: Queued, why: str) -> None:
        with self.state.transaction():
            self.state.dequeue(item.id)
            if item.tx:
                self.dropped = self.state.bump("dropped")
        log.warning("ocpp.message_dropped", action=item.action, connector=item.connector, why=why,
                    dropped=self.dropped)

    def _failed(self, item: Queued, why: str) -> None:
        attempts = item.attempts + 1
        if not item.tx or attempts >= self.attempts():
            self.drop(item, why[:200])
            return
        wait = self.retry_interval_s() * attempts
        self.state.retry_later(item.id, self.clock() + wait)
        log.info("ocpp.message_retry", action=item.action, attempt=attempts, wait_s=wait)
