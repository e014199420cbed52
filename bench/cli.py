"""What a CLI command costs: `evsed status` (and a few others) against a running daemon on the
simulator, beside the interpreter's own start (`python -c pass`) measured in the same run. The
goal (DESIGN.md): a CLI command within 3x the interpreter's start.

Runs alternate (interpreter, then each command) so load on the machine falls on all alike; the
figures are medians of the wall-clock time and of the CPU time the process used (user + system:
on a shared, loaded machine the steadier of the two). `make bench` passes the python of a
production install (--python).

Usage: python bench/cli.py [--python PATH] [--runs N]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GOAL_RATIO = 3.0  # DESIGN.md: a CLI command within 3x the interpreter's own start


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_once(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall-clock s, CPU s) of one run of argv."""
    start, cpu = time.perf_counter(), _children_cpu()
    proc = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    elapsed, used = time.perf_counter() - start, _children_cpu() - cpu
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {proc.stderr.strip()}")
    return elapsed, used


def wait_for_socket(path: Path, daemon: subprocess.Popen, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if daemon.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the daemon did not come up (exit {daemon.poll()})")
        time.sleep(0.05)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--python", default=sys.executable, help="the interpreter of the evsed install to measure")
    ap.add_argument("--runs", type=int, default=30, help="runs of each command (default 30)")
    opts = ap.parse_args()
    python = opts.python
    evsed = str(Path(python).parent / "evsed")
    with tempfile.TemporaryDirectory(prefix="evsed-bench-cli-") as tmp:
        # The simulator's config as installed, without [store]: the daemon's directories come from
        # the environment, as systemd gives them to the installed unit.
        config = Path(tmp) / "evsed.toml"
        config.write_text((ROOT / "config/simulator.toml").read_text())
        env = {k: v for k, v in os.environ.items() if k not in ("EVSED_CONFIG", "PYTHONDONTWRITEBYTECODE")}
        env.update(STATE_DIRECTORY=f"{tmp}/state", RUNTIME_DIRECTORY=f"{tmp}/run")
        daemon = subprocess.Popen([evsed, "run", "-c", str(config)], env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, cwd=tmp)
        try:
            wait_for_socket(Path(tmp) / "run" / "control.sock", daemon)
            commands = {
                "python -c pass (reference)": [python, "-c", "pass"],
                "evsed status": [evsed, "status", "-c", str(config)],
                "evsed status --json": [evsed, "status", "--json", "-c", str(config)],
                "evsed sim plug": [evsed, "sim", "plug", "-c", str(config)],
                "evsed sessions": [evsed, "sessions", "-c", str(config)],
                "evsed --version": [evsed, "--version"],
            }
            for argv in commands.values():  # warm the page cache and the bytecode
                run_once(argv, env)
            wall: dict[str, list[float]] = {name: [] for name in commands}
            cpu: dict[str, list[float]] = {name: [] for name in commands}
            for _ in range(opts.runs):
                for name, argv in commands.items():
                    elapsed, used = run_once(argv, env)
                    wall[name].append(elapsed)
                    cpu[name].append(used)
        finally:
            daemon.terminate()
            daemon.wait(timeout=30)
    reference = "python -c pass (reference)"
    ref_wall, ref_cpu = statistics.median(wall[reference]), statistics.median(cpu[reference])
    print(f"CLI start, median of {opts.runs} runs each, {python}")
    print(f"{'command':<30}{'wall ms':>9}{'x python':>10}{'CPU ms':>9}{'x python':>10}")
    for name in commands:
        w, c = statistics.median(wall[name]), statistics.median(cpu[name])
        print(f"{name:<30}{w * 1000:>9.1f}{w / ref_wall:>10.2f}{c * 1000:>9.1f}{c / ref_cpu:>10.2f}")
    ratio = statistics.median(wall["evsed status"]) / ref_wall
    cpu_ratio = statistics.median(cpu["evsed status"]) / ref_cpu
    verdict = "within" if max(ratio, cpu_ratio) <= GOAL_RATIO else "OVER"
    print(f"evsed status: {ratio:.2f}x the interpreter's start, {cpu_ratio:.2f}x its CPU time ({verdict} the "
          f"goal of {GOAL_RATIO:g}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
