"""Resident memory and CPU of the MQTT service process, beside references measured in the same run.

A mosquitto on loopback, `evsed run` on the simulator, and `evsed service mqtt` in a child process
(as a board runs it: without rich, a test-only package structlog would load). The parent charges a
simulated EV for a while, counts what the service publishes, and reads the service's RSS and CPU
when online and idle, while charging, and after a Home Assistant birth message (a full republish).

Usage: python bench/mqtt.py [--charge-s S]   (needs Debian's mosquitto: `make test` installs it)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from footprint import cpu_s, rss_mb  # bench/ is on the path: the script's own directory

ROOT = Path(__file__).resolve().parent.parent
BASE = "evsed/evsed-sim"


def reference_rss(imports: str) -> float:
    code = f"import sys; sys.modules['rich'] = None; import {imports}; print(open('/proc/self/status').read())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return int(next(l for l in out.splitlines() if l.startswith("VmRSS:")).split()[1]) / 1024


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_broker(tmp: Path) -> tuple[subprocess.Popen, int]:
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not os.access(exe, os.X_OK):
        sys.exit("bench/mqtt.py needs mosquitto: `make test` installs it (apt-get install mosquitto)")
    port = free_port()
    conf = tmp / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest none\n"
                    f"user {pwd.getpwuid(os.geteuid()).pw_name}\n")  # as root it would switch users
    broker = subprocess.Popen([exe, "-c", str(conf)])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return broker, port
        except OSError:
            time.sleep(0.02)  # waiting for the broker to listen, not timing anything
    broker.kill()
    sys.exit("mosquitto did not start")


def start_daemon(config: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "evsed", "run", "-c", str(config)],
                            stderr=subprocess.PIPE, text=True, cwd=ROOT)
    for line in proc.stderr:  # type: ignore[union-attr]
        try:
            if json.loads(line).get("event") == "daemon.ready":
                break
        except ValueError:
            continue
    subprocess.Popen(["cat"], stdin=proc.stderr, stdout=subprocess.DEVNULL)  # keep its pipe drained
    return proc


async def measure(port: int, config: Path, service_pid: int, charge_s: float) -> dict[str, float]:
    import aiomqtt

    from evsed import protocol as p
    from evsed.config import load
    from evsed.control.client import request

    runtime = load(config).store.runtime_dir
    figures: dict[str, float] = {}
    counted = {"messages": 0}
    async with aiomqtt.Client("127.0.0.1", port) as client:
        await client.subscribe(f"{BASE}/#")

        async def count() -> None:
            async for message in client.messages:
                counted["messages"] += 1
                if message.topic.value == f"{BASE}/availability" and message.payload == b"online":
                    online.set()
        online = asyncio.Event()
        counter = asyncio.create_task(count())
        async with asyncio.timeout(30):
            await online.wait()
        figures["online, idle"] = rss_mb(service_pid)
        request(runtime, p.Plug())
        request(runtime, p.Tap(card="04A1B2C3"))
        before, cpu0, t0 = counted["messages"], cpu_s(service_pid), time.monotonic()
        await asyncio.sleep(charge_s)  # charging for a while: the figure is what it costs per second
        figures["charging"] = rss_mb(service_pid)
        figures["cpu_pct"] = (cpu_s(service_pid) - cpu0) / (time.monotonic() - t0) * 100
        figures["messages_per_s"] = (counted["messages"] - before) / (time.monotonic() - t0)
        await client.publish("homeassistant/status", "online")
        await asyncio.sleep(1.0)
        figures["after a Home Assistant birth"] = rss_mb(service_pid)
        request(runtime, p.Unplug())
        counter.cancel()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--charge-s", type=float, default=20.0)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        sys.modules["rich"] = None  # type: ignore[assignment]  # as on a board: rich is test-only here
        from evsed.cli import main as evsed_main
        sys.argv = ["evsed", "service", "mqtt", "-c", args.child]
        sys.exit(evsed_main())
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        broker, port = start_broker(tmp)
        config = tmp / "evsed.toml"
        config.write_text((ROOT / "config" / "simulator.toml").read_text()
                          + f'\n[store]\nstate_dir = "{tmp / "state"}"\nruntime_dir = "{tmp / "run"}"\n'
                          + f'[mqtt]\nurl = "mqtt://127.0.0.1:{port}"\n'
                          + "enabled = false  # the bench starts the service itself, without rich\n")
        daemon = start_daemon(config)
        service = subprocess.Popen([sys.executable, __file__, "--child", str(config)],
                                   stderr=subprocess.DEVNULL, cwd=ROOT)
        try:
            figures = asyncio.run(measure(port, config, service.pid, args.charge_s))
            daemon_rss = rss_mb(daemon.pid)
        finally:
            for proc in (service, daemon, broker):
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
    cpu, rate = figures.pop("cpu_pct"), figures.pop("messages_per_s")
    print(f"reference: python + asyncio, sqlite3, tomllib          {reference_rss('asyncio, sqlite3, tomllib'):5.1f} MB")
    print(f"reference: the same + aiomqtt (paho)                   "
          f"{reference_rss('asyncio, sqlite3, tomllib, aiomqtt'):5.1f} MB")
    print(f"reference: the same + structlog, evsed.config          "
          f"{reference_rss('asyncio, sqlite3, tomllib, aiomqtt, structlog, evsed.config'):5.1f} MB")
    for name, mb in figures.items():
        print(f"mqtt service RSS, {name:36s} {mb:5.1f} MB")
    print(f"mqtt service peak RSS {max(figures.values()):.1f} MB; safety daemon beside it {daemon_rss:.1f} MB")
    print(f"mqtt service while charging: {cpu:.2f} % of a core, {rate:.1f} messages/s published")


if __name__ == "__main__":
    main()
