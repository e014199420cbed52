"""Control-socket load (`python bench/campaign.py --load 3000`, in `make bench`): thousands of
clients at once while the simulated EV charges, with the daemon as the power-cut campaign starts it."""

from __future__ import annotations

import asyncio
import resource
import time
from pathlib import Path

from campaign import CARD, Campaign, Failure
from evsed import protocol as p
from evsed.control import client as control


STATUS = p.encode_line(p.Status().to_wire())


def load(workdir: Path, clients: int) -> dict:
    """Thousands of control-socket clients at once while the EV charges: how many the daemon
    served or turned away (it caps at 64 connections), whether charging held, and how long the
    stop took (unplug to contactor open, as status shows it) under that load."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # the clients' descriptors, not the daemon's
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, clients + 256)), hard))
    camp = Campaign(workdir, 0, ocpp_share=0, board=False)
    proc = camp.start()
    try:
        camp.ready(proc)
        camp.ask(p.Plug(connector=1))
        camp.ask(p.Tap(card=CARD, connector=1))
        deadline = time.monotonic() + 10
        while camp.ask(p.Status()).connectors[0].contactor != "closed":
            if time.monotonic() > deadline:
                raise Failure("the EV did not start charging")
            time.sleep(0.02)
        path = str(control.socket_path(camp.runtime))
        served = refused = 0
        latencies: list[float] = []

        async def client() -> None:
            nonlocal served, refused
            t0 = time.perf_counter()
            try:
                reader, writer = await asyncio.open_unix_connection(path)
                writer.write(STATUS)
                await writer.drain()
                line = await asyncio.wait_for(reader.readline(), 30)
                writer.close()
            except (OSError, asyncio.TimeoutError):
                refused += 1
                return
            if line.startswith(b"{") and b'"connectors"' in line:
                served += 1
                latencies.append(time.perf_counter() - t0)
            else:
                refused += 1

        async def flood(at_once: int) -> None:
            gate = asyncio.Semaphore(at_once)

            async def gated() -> None:
                async with gate:
                    await client()
            await asyncio.gather(*(gated() for _ in range(clients)))

        t0 = time.perf_counter()
        asyncio.run(flood(clients))  # a burst: all at once, far past the cap of 64
        flood_s = time.perf_counter() - t0
        burst = {"served": served, "turned_away": refused}
        served = refused = 0
        latencies.clear()
        t0 = time.perf_counter()
        asyncio.run(flood(48))  # steady: 48 at a time, under the cap
        steady_s = time.perf_counter() - t0
        charging_held = camp.ask(p.Status()).connectors[0].contactor == "closed"
        t0 = time.perf_counter()
        camp.ask(p.Unplug(connector=1))
        while camp.ask(p.Status()).connectors[0].contactor != "open":
            time.sleep(0.001)
        stop_ms = (time.perf_counter() - t0) * 1000
        alive = proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(10)
    latencies.sort()
    pct = (lambda q: round(latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000, 1)
           if latencies else None)
    return {"clients": clients, "burst": {**burst, "s": round(flood_s, 2)},
            "steady_48_at_a_time": {"served": served, "turned_away": refused, "s": round(steady_s, 2),
                                    "status_ms_p50": pct(0.5), "status_ms_p99": pct(0.99)},
            "charging_held": charging_held,
            "unplug_to_open_seen_ms": round(stop_ms, 1), "daemon_alive": alive}
