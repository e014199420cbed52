"""Resident memory, start-to-ready time and idle CPU of `evsed run` on the simulator.

Reference figures measured in the same run: `python -c pass`, and a bare Python that
imports asyncio, sqlite3 and tomllib (what any daemon of this kind starts from).

Usage: python bench/footprint.py [--runs N] [--idle-s S]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def time_command(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True)
    return time.perf_counter() - start


def bare_rss() -> float:
    code = "import asyncio, sqlite3, tomllib, sys; print(open('/proc/self/status').read())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    line = next(l for l in out.splitlines() if l.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def daemon_run(config: Path, idle_s: float) -> tuple[float, float, float]:
    """(start-to-ready s, RSS MB after idling, idle CPU % of one core)."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "evsed", "run", "-c", str(config)],
                            stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        for line in proc.stderr:
            try:
                if json.loads(line).get("event") == "daemon.ready":
                    break
            except ValueError:
                continue  # a line that is not ours (a library's warning)
        ready = time.perf_counter() - start
        cpu0, t0 = cpu_s(proc.pid), time.perf_counter()
        time.sleep(idle_s)  # a benchmark measuring idle, not a test
        cpu = (cpu_s(proc.pid) - cpu0) / (time.perf_counter() - t0) * 100
        return ready, rss_mb(proc.pid), cpu
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()  # never leave a daemon behind
            proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--idle-s", type=float, default=5.0)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="evsed-footprint-"))
    text = (ROOT / "config" / "simulator.toml").read_text()
    text += f'\n[store]\nstate_dir = "{tmp / "state"}"\nruntime_dir = "{tmp / "run"}"\n'
    config = tmp / "evsed.toml"
    config.write_text(text)

    bare = [time_command([sys.executable, "-c", "pass"]) for _ in range(args.runs)]
    runs = [daemon_run(config, args.idle_s) for _ in range(args.runs)]
    ready = [r[0] for r in runs]
    print(f"evsed footprint bench, {args.runs} runs, idle {args.idle_s:g} s each (simulator config)")
    print(f"  start to ready (spawn -> daemon.ready)   median {statistics.median(ready):.3f} s  max {max(ready):.3f} s"
          "  (goal < 0.6 s)")
    print(f"  reference: python -c pass               median {statistics.median(bare):.3f} s")
    print(f"  resident memory after idling            median {statistics.median(r[1] for r in runs):.1f} MB"
          "  (goal <= 35 MB)")
    print(f"  reference: python + asyncio/sqlite3/tomllib      {bare_rss():.1f} MB")
    print(f"  idle CPU (no EV: pilot every 125 ms)    median {statistics.median(r[2] for r in runs):.2f} % of a core"
          "  (goal < 1 %)")


if __name__ == "__main__":
    main()
