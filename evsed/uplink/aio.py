"""asyncio helpers the uplink's loops share: run several loops until the first ends, and wait for
an event with a timeout that never swallows a cancellation."""

from __future__ import annotations

import asyncio
from typing import Any, Coroutine


async def first_of(*coros: Coroutine[Any, Any, Any]) -> None:
    """Run coros until the first ends; cancel the others; its exception propagates as it is."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    done: set[asyncio.Future[Any]] = set()
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        pending: set[asyncio.Future[Any]] = set(tasks)
        while pending:  # cancelled again until gone: a library's wait_for may swallow one cancel
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=1)
    for task in done:
        if not task.cancelled():
            exc = task.exception()
            if exc is not None:
                raise exc


async def wait_event(event: asyncio.Event, timeout_s: float) -> bool:
    """True when event is set within timeout_s. asyncio.timeout, unlike 3.11's wait_for, never
    swallows a cancellation that races the event (a stuck task at shutdown otherwise)."""
    try:
        async with asyncio.timeout(max(0.0, timeout_s)):
            await event.wait()
        return True
    except TimeoutError:
        return False
