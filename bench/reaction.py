"""Event-to-contactor-open-command latency inside the running daemon, under load.

Runs the real Daemon on the simulator in this process. A separate thread plays the
hardware: it trips the RCD or makes the EV leave state C (as a GPIO edge callback would)
and the time to the contactor's open() call is recorded. Meanwhile the daemon logs
(JSON lines), polls the meter every 0.2 s, and a task burns CPU in 1 ms slices like an
uplink parsing messages. Reference in the same run: a bare asyncio loop woken from a
thread (call_soon_threadsafe). Also prints card tap -> contactor close latency.

Two more loads, each on its own row: --flood N connects N control-socket clients from another
process that ask for status without pause (the daemon serves 64 and turns the rest away; those
connect again at once), and --slow-journal makes the daemon's log a pipe that its reader
drains at 4 KiB/s, so the pipe stays full and every write of the log thread blocks.

Usage: python bench/reaction.py [--cycles N] [--service MODE|all] [--flood N] [--slow-journal]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import resource
import select
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from evsed import config  # noqa: E402
from evsed.control import client as control  # noqa: E402
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
from evsed import protocol as p
from evsed.services.link import Link

async def main(runtime_dir, mode):
    link = await Link.connect(Path(runtime_dir), "bench")
    if mode == "hung":  # subscribed, then never reads again: its socket buffer fills up
        await link._open()
        reader, writer = await asyncio.open_unix_connection(str(link.path))
        writer.write(p.encode_line(p.Subscribe(after=0).to_wire()))
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


FLOOD = """
import asyncio, json, sys
from evsed import protocol as p
STATUS = p.encode_line(p.Status().to_wire())

async def client(path, counts):
    while True:  # connect, ask without pause until turned away or cut off, connect again at once
        try:
            reader, writer = await asyncio.open_unix_connection(path)
        except OSError:
            counts["failed"] += 1
            await asyncio.sleep(0)
            continue
        try:
            while True:
                writer.write(STATUS)
                line = await reader.readline()
                if b'"connectors"' not in line:
                    counts["turned_away"] += 1
                    break
                counts["served"] += 1
        except OSError:
            counts["failed"] += 1
        finally:
            writer.close()

async def main(path, n):
    counts = {"served": 0, "turned_away": 0, "failed": 0}
    tasks = [asyncio.create_task(client(path, counts)) for _ in range(n)]
    await asyncio.sleep(0.5)  # every client has connected once (or been turned away)
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the bench closes it
    print(json.dumps(counts), flush=True)

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


async def start_flood(runtime_dir: Path, clients: int) -> asyncio.subprocess.Process:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # inherited: the clients' descriptors
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, clients + 256)), hard))
    path = str(control.socket_path(runtime_dir))
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", FLOOD, path, str(clients),
                                                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    assert (await proc.stdout.readline()).strip() == b"ready"
    return proc


async def stop_flood(proc: asyncio.subprocess.Process) -> dict[str, int]:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.close()
    counts = json.loads(await proc.stdout.readline())
    proc.kill()
    await proc.wait()
    return counts


class SlowJournal:
    """The daemon's log stream: a pipe whose reader takes 4 KiB a second (a journal that lags),
    so once its 64 KiB fill up every write of the daemon's log thread blocks."""

    def __init__(self) -> None:
        r, w = os.pipe()
        self.stream = os.fdopen(w, "w")
        self._r = r
        self.read_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drain, daemon=True, name="slow-journal")
        self._thread.start()

    def _drain(self) -> None:
        while not self._stop.wait(0.25):
            if select.select([self._r], [], [], 0)[0]:  # never block: close() must not wait on it
                self.read_bytes += len(os.read(self._r, 1024))

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        os.close(self._r)  # the log thread's blocked write fails (EPIPE) and the rest is dropped


async def measure(cycles: int, service: str = "none", flood: int = 0,
                  slow_journal: bool = False) -> dict[str, list[float]]:
    tmp = Path(tempfile.mkdtemp(prefix="evsed-bench-"))
    text = (ROOT / "config" / "simulator.toml").read_text()
    text += f'\n[store]\nstate_dir = "{tmp / "state"}"\nruntime_dir = "{tmp / "run"}"\n'
    text += "[timing]\nmeter_interval_s = 0.2\ncard_repeat_s = 0\n"  # the bench taps the same card to stop
    (tmp / "evsed.toml").write_text(text)
    cfg = config.load(tmp / "evsed.toml")
    journal = SlowJournal() if slow_journal else None
    # rendered and queued like under systemd
    # cache=False: each row logs to its own stream (cached loggers would keep the first row's)
    logs.configure("info", "json", stream=journal.stream if journal is not None else io.StringIO(), cache=False)

    daemon = Daemon(cfg)
    run = asyncio.create_task(daemon.run())
    await daemon.ready.wait()
    stop_load = asyncio.Event()
    load = asyncio.create_task(uplink_like_load(stop_load))
    proc = None if service == "none" else await start_service(cfg.store.runtime_dir, service)
    flooding = await start_flood(cfg.store.runtime_dir, flood) if flood else None
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
    if flooding is not None:
        counts = await stop_flood(flooding)
        result["flood"] = [float(counts["served"]), float(counts["turned_away"]), float(counts["failed"])]
    stop_load.set()
    await load
    if proc is not None:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
    daemon.stopping.set()
    await run
    if journal is not None:
        journal.close()
        result["journal_read_kib"] = [journal.read_bytes / 1024]
    logs.flush()
    return result


SERVICES = {"none": "no service process",
            "spin": "a subscribed service spinning at 100 % CPU",
            "hung": "a subscribed service hung (reads nothing)",
            "killed": "a subscribed service killed with -9 halfway"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cycles", type=int, default=200)
    parser.add_argument("--service", choices=(*SERVICES, "all"), default="all",
                        help="the service-process rows to run (none: only the rows of --flood/--slow-journal)")
    parser.add_argument("--flood", type=int, default=0, metavar="N",
                        help="also a row with N control-socket clients asking without pause")
    parser.add_argument("--slow-journal", action="store_true",
                        help="also a row with the daemon's log a pipe read at 4 KiB/s")
    args = parser.parse_args()
    rows: list[tuple[str, dict]] = [(SERVICES[m], {"service": m})
                                    for m in (SERVICES if args.service == "all" else [args.service])]
    if args.flood:
        rows.append((f"{args.flood} control-socket clients asking for status without pause", {"flood": args.flood}))
    if args.slow_journal:
        rows.append(("the log a pipe read at 4 KiB/s (a journal that lags)", {"slow_journal": True}))
    if args.flood and args.slow_journal:
        rows.append((f"both: {args.flood} clients and the lagging journal",
                     {"flood": args.flood, "slow_journal": True}))
    print(f"evsed reaction bench, {args.cycles} cycles per row, daemon logging JSON, meter every 0.2 s, "
          "an in-process CPU load")
    for row, kw in rows:
        result = asyncio.run(measure(args.cycles, **kw))
        print(f"with {row}:")
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
        if "flood" in result:
            served, away, failed = (int(x) for x in result["flood"])
            print(f"  control socket: {served} status replies, {away} connections turned away, {failed} failed")
        if "journal_read_kib" in result:
            print(f"  journal took {result['journal_read_kib'][0]:.0f} KiB; the rest was queued or dropped")


if __name__ == "__main__":
    main()
