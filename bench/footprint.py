"""Resident memory, start-to-ready time and idle CPU of `evsed run` on the simulator, alone and
with its OCPP service (1.6J, then 2.0.1) connected to the demo CSMS of its version.

The figures are for a production install: `make bench` installs the project (with its `ocpp`
extra, without the test extras) into a fresh virtual environment and passes its python as
--python. The editable dev environment measures more: no compiled bytecode is kept there when
PYTHONDONTWRITEBYTECODE is set, and structlog loads `rich`, which import-linter brings in.

Reference figures measured in the same run: `python -c pass`, and a bare Python that imports
asyncio, sqlite3 and tomllib (what any daemon of this kind starts from).

Usage: python bench/footprint.py [--python PATH] [--runs N] [--idle-s S]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")
GOAL_READY_S, GOAL_RSS_MB, GOAL_RSS_OCPP_MB, GOAL_IDLE_CPU = 0.3, 30.0, 45.0, 0.5  # DESIGN.md


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def time_command(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True)
    return time.perf_counter() - start


def bare_rss(python: str) -> float:
    code = "import asyncio, sqlite3, tomllib, sys; print(open('/proc/self/status').read())"
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout
    line = next(l for l in out.splitlines() if l.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()  # never leave a daemon behind
        proc.wait()


def wait_for_event(proc: subprocess.Popen, name: str) -> None:
    assert proc.stderr is not None
    for line in proc.stderr:
        try:
            if json.loads(line).get("event") == name:
                return
        except ValueError:
            continue  # a line that is not ours (a library's warning)
    raise SystemExit(f"evsed exited before {name}: exit {proc.wait()}")


def daemon_run(python: str, config: Path, idle_s: float) -> tuple[float, float, float]:
    """(start-to-ready s, RSS MB after idling, idle CPU % of one core)."""
    start = time.perf_counter()
    # cwd: a directory without the source tree, so the installed package is the one imported
    proc = subprocess.Popen([python, "-m", "evsed", "run", "-c", str(config)],
                            stderr=subprocess.PIPE, text=True, cwd=config.parent)
    try:
        wait_for_event(proc, "daemon.ready")
        ready = time.perf_counter() - start
        cpu0, t0 = cpu_s(proc.pid), time.perf_counter()
        time.sleep(idle_s)  # a benchmark measuring idle, not a test
        cpu = (cpu_s(proc.pid) - cpu0) / (time.perf_counter() - t0) * 100
        return ready, rss_mb(proc.pid), cpu
    finally:
        stop(proc)


def ocpp_run(python: str, config: Path, idle_s: float, csms_module: str = "simulator.csms") -> tuple[float, float] | None:
    """(daemon RSS MB, OCPP service RSS MB) once the service is connected and idle; None
    without the ocpp package."""
    if subprocess.run([python, "-c", "import ocpp, websockets"], capture_output=True).returncode != 0:
        return None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    csms = subprocess.Popen([python, "-m", csms_module, "--port", str(port)], stdout=subprocess.PIPE,
                            text=True, cwd=config.parent)
    daemon = None
    try:
        assert csms.stdout is not None
        next(csms.stdout)  # "CSMS listening on ..."
        text = config.read_text().replace("ws://127.0.0.1:9000/", f"ws://127.0.0.1:{port}/")
        config.write_text(text)
        daemon = subprocess.Popen([python, "-m", "evsed", "run", "-c", str(config)], stderr=subprocess.DEVNULL,
                                  text=True, cwd=config.parent)
        for line in csms.stdout:
            if "-> StatusNotification" in line:  # booted and told its status: online
                break
        time.sleep(idle_s)  # a benchmark measuring idle, not a test
        services = children(daemon.pid)
        return rss_mb(daemon.pid), max((rss_mb(pid) for pid in services), default=float("nan"))
    finally:
        if daemon is not None:
            stop(daemon)
        stop(csms)


def with_store(source: Path, tmp: Path, name: str) -> Path:
    config = tmp / name / "evsed.toml"
    config.parent.mkdir(parents=True)
    config.write_text(source.read_text() + f'\n[store]\nstate_dir = "{config.parent / "state"}"\n'
                      f'runtime_dir = "{config.parent / "run"}"\n')
    return config


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--python", default=sys.executable, help="the interpreter of the install to measure")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--idle-s", type=float, default=5.0)
    args = parser.parse_args()
    python = os.path.abspath(args.python)  # the daemons run in a temporary directory
    tmp = Path(tempfile.mkdtemp(prefix="evsed-footprint-"))
    bare = [time_command([python, "-c", "pass"]) for _ in range(args.runs)]
    runs = [daemon_run(python, with_store(ROOT / "config" / "simulator.toml", tmp, f"run{i}"), args.idle_s)
            for i in range(args.runs)]
    ocpp = ocpp_run(python, with_store(ROOT / "config" / "simulator-ocpp.toml", tmp, "ocpp"), args.idle_s)
    ocpp201 = ocpp_run(python, with_store(ROOT / "config" / "simulator-ocpp201.toml", tmp, "ocpp201"), args.idle_s,
                       "simulator.csms201")
    ready = [r[0] for r in runs]
    print(f"evsed footprint bench, {args.runs} runs, idle {args.idle_s:g} s each (simulator config), {python}")
    print(f"  start to ready (spawn -> daemon.ready)   median {statistics.median(ready):.3f} s  max {max(ready):.3f} s"
          f"  (goal < {GOAL_READY_S} s)")
    print(f"  reference: python -c pass               median {statistics.median(bare):.3f} s")
    print(f"  resident memory after idling            median {statistics.median(r[1] for r in runs):.1f} MB"
          f"  (goal <= {GOAL_RSS_MB:g} MB)")
    print(f"  reference: python + asyncio/sqlite3/tomllib      {bare_rss(python):.1f} MB")
    print(f"  idle CPU (no EV: pilot every 125 ms)    median {statistics.median(r[2] for r in runs):.2f} % of a core"
          f"  (goal < {GOAL_IDLE_CPU} %)")
    if ocpp is None:
        print("  with OCPP: not measured (the ocpp extra is not installed in this environment)")
    else:
        print(f"  with OCPP, online and idle: daemon {ocpp[0]:.1f} MB, OCPP service {ocpp[1]:.1f} MB"
              f"  (goal <= {GOAL_RSS_OCPP_MB:g} MB a process)")
    if ocpp201 is not None:
        print(f"  with OCPP 2.0.1, online and idle: daemon {ocpp201[0]:.1f} MB, OCPP service {ocpp201[1]:.1f} MB"
              f"  (goal <= {GOAL_RSS_OCPP_MB:g} MB a process)")


if __name__ == "__main__":
    main()
