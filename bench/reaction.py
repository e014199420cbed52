"""Event-to-contactor-open-command latency inside the running daemon, under load.

Runs the real Daemon on the simulator in this process. A separate thread plays the
hardware: it trips the RCD or makes the EV leave state C (as a GPIO edge callback would)
and the time to the contactor's open() call is recorded. Meanwhile the daemon logs
(JSON lines), polls the meter every 0.2 s, and a task burns CPU in 1 ms slices like an
uplink parsing messages. Reference in the same run: a bare asyncio loop woken from a
thread (call_soon_threadsafe). Also prints card tap -> contactor close latency.

Usage: python bench/reaction.py [--cycles N]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from evsed import config  # noqa: E402
from evsed.shell import logs  # noqa: E402
from evsed.shell.daemon import Daemon  # noqa: E402
from evsed.core.events import ClearFaults  # noqa: E402


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def ms(x: float) -> str:
    return f"{x * 1000:.3f} ms"


async def reference_wakeups(n: int) -> list[float]:
    """A bare loop woken from another thread: the floor of any threaded input."""
    loop = asyncio.get_running_loop()
    out: list[float] = []
    for _ in range(n):
        done = asyncio.Event()
        start = [0.0]

        def fire():
            start[0] = time.perf_counter()
            loop.call_soon_threadsafe(lambda: (out.append(time.perf_counter() - start[0]), done.set()))
        threading.Thread(target=fire).start()
        await done.wait()
    return out


async def uplink_like_load(stop: asyncio.Event) -> None:
    message = {"messageTypeId": 2, "action": "MeterValues", "payload": {"meterValue": [{"sampledValue": [
        {"value": str(i), "measurand": "Current.Import", "phase": "L1"} for i in range(20)]}]}}
    while not stop.is_set():
        until = time.perf_counter() + 0.001
        while time.perf_counter() < until:
            json.loads(json.dumps(message))
        await asyncio.sleep(0.01)


SERVICE = """
import asyncio, sys, time
from pathlib import Path
from evsed.services.link import Link

async def main(runtime_dir, mode):
    link = await Link.connect(Path(runtime_dir), "bench")
    if mode == "hung":  # subscribed, then never reads again: its socket buffer fills up
        await link._open()
        reader, writer = await asyncio.open_unix_connection(str(link.path))
        writer.write(b'{"cmd": "subscribe", "after": 0}\\n')
        await writer.drain()
        print("ready", flush=True)
        while True:
            time.sleep(3600)  # hung: blocks its own loop, reads nothing
    print("ready", flush=True)
    async for event in link.events(after=0):  # spin: take every event and burn the CPU between
        until = time.perf_counter() + 0.05
        while time.perf_counter() < until:
            pass

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


async def start_service(runtime_dir: Path, mode: str) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", SERVICE, str(runtime_dir), mode,
                                                stdout=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    assert (await proc.stdout.readline()).strip() == b"ready"
    return proc


async def measure(cycles: int, service: str = "none") -> dict[str, list[float]]:
    tmp = Path(tempfile.mkdtemp(prefix="evsed-bench-"))
    text = (ROOT / "config" / "simulator.toml").read_text()
    text += f'\n[store]\nstate_dir = "{tmp / "state"}"\nruntime_dir = "{tmp / "run"}"\n'
    text += "[timing]\nmeter_interval_s = 0.2\ncard_repeat_s = 0\n"  # the bench taps the same card to stop
    (tmp / "evsed.toml").write_text(text)
    cfg = config.load(tmp / "evsed.toml")
    logs.configure("info", "json", stream=io.StringIO())  # rendered and queued like under systemd

    daemon = Daemon(cfg)
    run = asyncio.create_task(daemon.run())
    await daemon.ready.wait()
    stop_load = asyncio.Event()
    load = asyncio.create_task(uplink_like_load(stop_load))
    proc = None if service == "none" else await start_service(cfg.store.runtime_dir, service)
    ctrl, bench = daemon.connectors[1], daemon.world.connector(1)
    opened: list[float] = []
    closed: list[float] = []
    real_open, real_close = ctrl.contactor.open, ctrl.contactor.close

    def open_hook():
        opened.append(time.perf_counter())
        real_open()

    def close_hook():
        closed.append(time.perf_counter())
        real_close()
    ctrl.contactor.open, ctrl.contactor.close = open_hook, close_hook

    async def until(pred):
        while not pred():
            await asyncio.sleep(0.001)

    def in_thread(fn) -> float:
        t = [0.0]

        def run_it():
            t[0] = time.perf_counter()
            fn()
        th = threading.Thread(target=run_it)
        th.start()
        th.join()
        return t[0]

    result = {"fault_to_open": [], "c_to_b_to_open": [], "tap_to_close": []}
    bench.plug()
    for i in range(cycles):
        if service == "killed" and i == cycles // 2 and proc is not None:
            proc.kill()  # a service dies mid-run: its connection goes, charging must not notice
        # tap -> close (EV waiting in B, local whitelist)
        n_closed = len(closed)
        t0 = in_thread(lambda: daemon.world.reader.tap("04A1B2C3"))
        await until(lambda: len(closed) > n_closed)
        result["tap_to_close"].append(closed[-1] - t0)
        await asyncio.sleep(0.02)
        n_opened = len(opened)
        if i % 2 == 0:
            t0 = in_thread(lambda: bench.inject("rcd"))
            await until(lambda: len(opened) > n_opened)
            result["fault_to_open"].append(opened[n_opened] - t0)
            bench.inject("rcd", active=False)
            await asyncio.sleep(0.01)
            ctrl.feed(ClearFaults())
        else:
            t0 = in_thread(lambda: bench.set_ev(wants_energy=False))
            await until(lambda: len(opened) > n_opened)
            result["c_to_b_to_open"].append(opened[n_opened] - t0)
            bench.set_ev(wants_energy=True)
        # end the session (same card again) so the next cycle starts from B
        daemon.world.reader.tap("04A1B2C3")
        await until(lambda: ctrl.session is None)
        bench.unplug()
        await until(lambda: ctrl.state.pilot is not None and ctrl.state.pilot.value == "A")
        bench.plug()
        await until(lambda: ctrl.state.pilot is not None and ctrl.state.pilot.value == "B")
    result["reference"] = await reference_wakeups(cycles)  # same loop, same load, daemon running
    stop_load.set()
    await load
    if proc is not None:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
    daemon.stopping.set()
    await run
    logs.flush()
    return result


SERVICES = {"none": "no service process",
            "spin": "a subscribed service spinning at 100 % CPU",
            "hung": "a subscribed service hung (reads nothing)",
            "killed": "a subscribed service killed with -9 halfway"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cycles", type=int, default=200)
    parser.add_argument("--service", choices=(*SERVICES, "all"), default="all")
    args = parser.parse_args()
    modes = list(SERVICES) if args.service == "all" else [args.service]
    print(f"evsed reaction bench, {args.cycles} cycles per row, daemon logging JSON, meter every 0.2 s, "
          "an in-process CPU load")
    for mode in modes:
        result = asyncio.run(measure(args.cycles, mode))
        print(f"with {SERVICES[mode]}:")
        for name, label in (("fault_to_open", "RCD trip -> contactor open command"),
                            ("c_to_b_to_open", "EV leaves C -> contactor open command"),
                            ("tap_to_close", "card tap (EV in B) -> contactor close command"),
                            ("reference", "reference: bare loop woken from a thread")):
            values = result[name]
            print(f"  {label:48s} n={len(values):4d}  p50 {ms(statistics.median(values))}"
                  f"  p99 {ms(pct(values, 99))}  max {ms(max(values))}")
        opens = result["fault_to_open"] + result["c_to_b_to_open"]
        ratio = pct(opens, 99) / pct(result["reference"], 99)
        print(f"  open-command p99 over both: {ms(pct(opens, 99))} = {ratio:.1f}x the reference p99 "
              "(goals: <= 2 ms and <= 20x; IEC 61851 allows 100 ms)")


if __name__ == "__main__":
    main()
