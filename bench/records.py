"""Records at scale: report and export times over 100k sessions with samples, export memory,
and fsyncs per minute while charging.

References measured in the same run: a bare SQLite scan summing the same rows (reports), a
bare cursor walk of the same rows without formatting (export), and one commit per sample
(fsyncs). fsyncs are counted with strace when it is installed, else as commits (one commit in
WAL mode with synchronous=FULL is one fsync of the WAL, checkpoints aside).

Usage: python bench/records.py [--sessions N] [--samples-per-session K] [--charge-minutes M]
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from evsed.core.tariff import DriverPrice, Tariff  # noqa: E402
from evsed.store import reports  # noqa: E402
from evsed.store.samples import SampleBatcher  # noqa: E402
from evsed.store.sessions import LiveSession, Store  # noqa: E402

TZ = ZoneInfo("Europe/Berlin")
EPOCH = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)


def fill(path: Path, sessions: int, per_session: int) -> None:
    """sessions finished sessions over about two years, each with per_session samples."""
    Store(path).close()  # the schema, through the migrations
    import sqlite3
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA synchronous=OFF")  # filling is setup, not what is measured
    db.execute("BEGIN")
    rnd = random.Random(1)
    cards = [(f"{i:08X}", f"card {i}", rnd.choice(("family", "guests", "staff"))) for i in range(200)]
    step = 2 * 365 * 86400 // sessions
    rows, samples = [], []
    for i in range(1, sessions + 1):
        tag, name, group = rnd.choice(cards)
        start = EPOCH + dt.timedelta(seconds=i * step)
        dur = rnd.randint(600, 14400)
        energy = dur * rnd.randint(1, 6)  # 3.6-22 kW
        stop = start + dt.timedelta(seconds=dur)
        rows.append((i, 1, tag, name, group, "local", start.isoformat(), stop.isoformat(), stop.isoformat(),
                     10_000 * i, 10_000 * i + energy, 10_000 * i + energy, energy, 7000.0, "ev_disconnected",
                     dur, dur - 300, 300, 1, '{"tariff":"bench","price":{"name":"' + group + '"}}', f"bench/{group}",
                     "EUR", 2,
                     energy * 30 // 1000, energy * 40 // 1000))
        t0 = int(start.timestamp() * 1000)
        for k in range(per_session):
            samples.append((i, t0 + k * dur * 1000 // per_session, 10_000 * i + energy * k // per_session, 7000,
                            10.0, 10.0, 10.0, 230.0, 230.0, 230.0))
        if len(samples) > 200_000:
            _flush(db, rows, samples)
    _flush(db, rows, samples)
    db.execute("COMMIT")
    db.close()


def _flush(db, rows, samples) -> None:
    db.executemany("INSERT INTO sessions (id, connector_id, id_tag, card_name, card_group, auth_source, started_at,"
                   " stopped_at, updated_at, meter_start_wh, meter_last_wh, meter_stop_wh, energy_wh, peak_power_w,"
                   " stop_reason, duration_s, charging_s, idle_s, stop_final, tariff, tariff_name, currency, money_decimals,"
                   " cost_minor, revenue_minor) VALUES (" + ",".join("?" * 25) + ")", rows)
    db.executemany("INSERT INTO samples VALUES (?,?,?,?,?,?,?,?,?,?)", samples)
    rows.clear()
    samples.clear()


def best(fn, runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


class Sink(io.TextIOBase):
    """Counts what an export writes without keeping it (like a pipe to a file)."""

    def __init__(self):
        self.chars = 0

    def write(self, s: str) -> int:
        self.chars += len(s)
        return len(s)


def export_peak(store: Store, until: str | None, samples: bool = False) -> tuple[float, int, float]:
    """(seconds, rows, peak traced KiB) of a CSV export to a sink: timed untraced, then traced."""
    fn = reports.export_samples if samples else reports.export_sessions
    fields = reports.SAMPLE_EXPORT if samples else reports.SESSION_EXPORT
    n = 0

    def run():
        nonlocal n
        n = reports.write(fn(store, None, until, TZ), fields, "csv", Sink())
    took = best(run, 3)
    tracemalloc.start()
    reports.write(fn(store, None, until, TZ), fields, "csv", Sink())
    peak = tracemalloc.get_traced_memory()[1] / 1024
    tracemalloc.stop()
    return took, n, peak


def bench_queries(path: Path, sessions: int) -> None:
    store = Store.open_readonly(path)
    everything = ("2000-01-01T00:00:00+00:00", "2100-01-01T00:00:00+00:00")
    ref = best(lambda: store.db.execute("SELECT COUNT(*), SUM(energy_wh), SUM(duration_s), SUM(charging_s),"
                                        " SUM(cost_minor), SUM(revenue_minor) FROM sessions").fetchall())
    print(f"report over {sessions} sessions (best of 5):")
    print(f"  reference: one bare SQLite scan summing the same columns     {ref * 1000:8.1f} ms")
    for by in (None, "card", "group"):
        t = best(lambda: reports.report(store, *everything, by, TZ))
        print(f"  evsed report --by {str(by):6s} (all sessions)                {t * 1000:8.1f} ms"
              f"  ({t / ref:.1f}x reference; goal 200 ms)")
    month = ("2025-06-01T00:00:00+00:00", "2025-07-01T00:00:00+00:00")
    t = best(lambda: reports.report(store, *month, "day", TZ))
    print(f"  evsed report --month 2025-06 --by day                     {t * 1000:8.1f} ms")

    cols = "id, connector_id, id_tag, card_name, card_group, started_at, stopped_at, energy_wh, cost_minor"
    ref = best(lambda: [r for r in store.db.execute(f"SELECT {cols} FROM sessions ORDER BY started_at, id")], 3)
    print(f"export of {sessions} sessions as CSV:")
    print(f"  reference: a bare cursor walk of the rows, no formatting   {ref:8.2f} s")
    cut = (EPOCH + dt.timedelta(days=73)).isoformat()  # about a tenth of the sessions
    t_small, n_small, peak_small = export_peak(store, cut)
    t_all, n_all, peak_all = export_peak(store, None)
    print(f"  evsed export --format csv, {n_small:6d} rows                    {t_small:8.2f} s"
          f"   peak traced {peak_small:7.0f} KiB")
    print(f"  evsed export --format csv, {n_all:6d} rows                    {t_all:8.2f} s"
          f"   peak traced {peak_all:7.0f} KiB  ({t_all / ref:.1f}x reference; goal 2 s, memory flat)")
    t_s, n_s, peak_s = export_peak(store, cut, samples=True)
    print(f"  evsed export --samples, {n_s:7d} rows                      {t_s:8.2f} s   peak traced {peak_s:7.0f} KiB")
    store.close()


CHARGE = """
import datetime as dt, sys
sys.path.insert(0, {root!r})
from evsed.store.sessions import Store, LiveSession
from evsed.store.samples import SampleBatcher
minutes, per_sample, path = {minutes}, {per_sample}, {path!r}
store = Store(path)
s = LiveSession(1, "04A1B2C3", "Alice", "family", "local", "2026-01-05T09:00:00+00:00", 0, 0)
store.start(s)
batch, wall0, commits = SampleBatcher(interval_s=1.0), dt.datetime(2026, 1, 5, 9, tzinfo=dt.timezone.utc), 0
print("CHARGING", flush=True)
for t in range(1, minutes * 60 + 1):  # a meter reading a second, on a virtual clock
    wall, wh = wall0 + dt.timedelta(seconds=t), t * 3
    batch.offer(t, wall, wh, 11000.0, (16.0, 16.0, 16.0), (230.0, 230.0, 230.0))
    if per_sample:
        store.add_samples(s.row_id, batch.take())
    elif t % 60 == 0:
        store.checkpoint(s.row_id, wh, 11000.0, wall.isoformat(), batch.take())
    else:
        continue
    commits += 1
print("DONE", commits, flush=True)
"""


def fsyncs(minutes: int, per_sample: bool, tmp: Path) -> tuple[int, int, str]:
    """(fsyncs while charging, commits, how counted) of a simulated charge of `minutes`."""
    path = tmp / f"charge-{per_sample}.db"
    code = CHARGE.format(root=str(ROOT), minutes=minutes, per_sample=per_sample, path=str(path))
    strace = shutil.which("strace")
    if not strace:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        done = int(out.split("DONE")[1].split()[0])
        return done, done, "commits (no strace)"
    trace = tmp / f"trace-{per_sample}.txt"
    out = subprocess.run([strace, "-f", "-e", "trace=fsync,fdatasync,write", "-o", str(trace), sys.executable, "-c",
                          code], capture_output=True, text=True, check=True).stdout
    done = int(out.split("DONE")[1].split()[0])
    counting, calls = False, 0
    for line in trace.read_text().splitlines():  # the program's own markers bracket the charge
        if 'write(1, "CHARGING' in line:
            counting = True
        elif 'write(1, "DONE' in line:
            break
        elif counting and ("fsync(" in line or "fdatasync(" in line):
            calls += 1
    return calls, done, "strace"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sessions", type=int, default=100_000)
    ap.add_argument("--samples-per-session", type=int, default=10)
    ap.add_argument("--charge-minutes", type=int, default=10)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        t = time.perf_counter()
        fill(tmp / "sessions.db", args.sessions, args.samples_per_session)
        size = (tmp / "sessions.db").stat().st_size / 2 ** 20
        print(f"filled {args.sessions} sessions with {args.sessions * args.samples_per_session} samples "
              f"in {time.perf_counter() - t:.1f} s ({size:.0f} MiB)")
        bench_queries(tmp / "sessions.db", args.sessions)
        m = args.charge_minutes
        batched, batched_commits, how = fsyncs(m, False, tmp)
        ref, ref_commits, _ = fsyncs(m, True, tmp)
        print(f"fsyncs while charging ({m} min, a meter reading a second, every reading kept as a sample; {how}):")
        print(f"  reference: one commit per sample       {ref:5d} fsyncs = {ref / m:6.1f} per minute ({ref_commits} commits)")
        print(f"  evsed: samples batched per checkpoint  {batched:5d} fsyncs = {batched / m:6.1f} per minute"
              f" ({batched_commits} commits; goal about 1 per minute)")


if __name__ == "__main__":
    main()
