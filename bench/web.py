"""Resident memory of the web page service (target: at most 35 MB), beside references from the same run.

The service runs in a child process on the demo charger (a session sampled 5 times a second) with
2,000 stored sessions; the parent loads the page, holds 5 live streams open, logs in once (scrypt)
and downloads the CSV, reading the child's RSS after each step. The child imports and sets up what
`evsed service web` does (the cli, the service runner, JSON logs) and nothing of the parent's
(urllib.request alone is 3 MB).

Usage: python bench/web.py [--sessions N] [--streams N]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import sys
from pathlib import Path

PASSWORD = "bench"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reference_rss(imports: str) -> float:
    import subprocess

    code = f"import sys; sys.modules['rich'] = sys.modules['greenlet'] = None; import {imports}; print(open('/proc/self/status').read())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return int(next(l for l in out.splitlines() if l.startswith("VmRSS:")).split()[1]) / 1024


async def child(state_dir: Path) -> None:
    import evsed.cli  # noqa: F401 - what `evsed service web` has loaded before the service
    import evsed.services.run  # noqa: F401
    from evsed.shell import logs
    from evsed.web.demo import DemoLink, demo_config
    from evsed.web.service import WebService
    from evsed.web.settings import hash_password, parse

    logs.configure("info", "auto")
    config = demo_config(state_dir, f'password_hash = "{hash_password(PASSWORD)}"')
    link = DemoLink()
    settings = parse(config)
    assert settings is not None
    service = WebService(config, link, settings)
    await service.start(port=0)
    print(json.dumps({"url": service.url}), flush=True)
    live = asyncio.create_task(service.live.run())
    link.plug(1)
    link.start(1, "04A1B2C3", "Alice")
    energy = 0.0
    while not live.done():
        energy += 11000 * 0.2 / 3600
        link.sample(1, 11000.0, [16.0, 15.9, 16.1], int(energy))
        await asyncio.sleep(0.2)  # the simulated meter's period


def seed(db: Path, count: int) -> None:
    from evsed.store.sessions import LiveSession, Store

    store = Store(db)
    start = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=count)
    store.db.execute("BEGIN")
    for k in range(count):
        at = (start + dt.timedelta(hours=k)).isoformat(timespec="seconds")
        s = LiveSession(1, f"04A1B2{k % 50:02X}", f"card {k % 50}", "", "local", at, k * 10_000, k * 10_000)
        store.start(s)
        store.stop(s.row_id, k * 10_000 + 9_000, 7000.0, "ev_disconnected", at)
    store.db.execute("COMMIT")
    store.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=2000)
    parser.add_argument("--streams", type=int, default=5)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        # As on a board: rich and greenlet are test-only dependencies here (of the tests and of
        # playwright), which structlog would load when present (+5 MB, +1.1 MB).
        sys.modules["rich"] = sys.modules["greenlet"] = None  # type: ignore[assignment]
        asyncio.run(child(Path(args.child)))
        return
    import contextlib
    import subprocess
    import tempfile
    import urllib.request

    with tempfile.TemporaryDirectory() as tmp:
        seed(Path(tmp) / "sessions.db", args.sessions)
        proc = subprocess.Popen([sys.executable, __file__, "--child", tmp], stdout=subprocess.PIPE, text=True)
        streams = []
        try:
            url = next(json.loads(line)["url"] for line in proc.stdout  # type: ignore[union-attr]
                       if line.startswith('{"url"'))  # past the service's own log lines
            figures = {"started": rss_mb(proc.pid)}
            for path in ("", "static/app.js", "api/view", "api/report", "usage/day.svg", "api/sessions"):
                urllib.request.urlopen(url + path, timeout=10).read()
            figures["page loaded"] = rss_mb(proc.pid)
            for _ in range(args.streams):
                stream = urllib.request.urlopen(url + "events", timeout=10)
                stream.readline()
                streams.append(stream)
            for stream in streams:  # each has seen live samples
                for _ in range(10):
                    stream.readline()
            figures[f"{args.streams} live streams"] = rss_mb(proc.pid)
            login = urllib.request.Request(url + "login", data=json.dumps({"password": PASSWORD}).encode(),
                                           headers={"Content-Type": "application/json"}, method="POST")
            urllib.request.urlopen(login, timeout=10).read()
            figures["after a login (scrypt)"] = rss_mb(proc.pid)
            csv = urllib.request.urlopen(url + "sessions.csv", timeout=30).read()
            figures[f"after a {len(csv) // 1024} KiB CSV"] = rss_mb(proc.pid)
        finally:
            for stream in streams:
                stream.close()
            proc.terminate()
            proc.wait(10)
    print(f"reference: python + asyncio, sqlite3, tomllib   {reference_rss('asyncio, sqlite3, tomllib'):5.1f} MB")
    print(f"reference: the same + h11 (the HTTP layer)      {reference_rss('asyncio, sqlite3, tomllib, h11'):5.1f} MB")
    with contextlib.suppress(subprocess.CalledProcessError):  # installed for the tests' HTTP client
        print(f"reference: the same + aiohttp.web (was used)    "
              f"{reference_rss('asyncio, sqlite3, tomllib, aiohttp.web'):5.1f} MB")
    print(f"reference: the same + structlog, evsed.config   {reference_rss('asyncio, sqlite3, tomllib, structlog, evsed.config'):5.1f} MB")
    for name, mb in figures.items():
        print(f"web service RSS, {name:32s} {mb:5.1f} MB")
    print(f"web service peak RSS {max(figures.values()):.1f} MB (target at most 35 MB)")


if __name__ == "__main__":
    main()
