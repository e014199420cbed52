"""The web page service's memory against the history it serves: resident memory after rounds of a
page's requests (view, report, both charts, the sessions table and its next page, the CSV export)
with 1,000, 10,000 and 100,000 stored sessions, beside references from the same run.

Sessions are one an hour back from now, so this month holds the same few hundred at every count:
what grows is the history only. The service runs as in bench/web.py (a child set up as `evsed service
web` is, on the demo charger); its peak over the rounds (VmHWM, reset after the start) and the time
of a round are printed too, the round's as a ratio to the smallest count's. Exits 1 when over its
target (for `make bench`): a peak above TARGET_MB at any count, or the memory after the rounds more
than FLAT_MB above the smallest count's at a larger one.

Usage: python bench/web_history.py [--counts 1000,10000,100000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from web import reference_rss, rss_mb

HERE = Path(__file__).parent
TARGET_MB = 35.0
FLAT_MB = 1.0  # about three times what two runs of the same count differ by
PAGE = ("", "api/view", "api/report", "usage/day.svg", "usage/hour.svg", "api/sessions")


def seed(db: Path, count: int) -> None:
    """count finished sessions, one an hour up to now: the first through the store as the daemon
    writes one, the rest copied from it in SQL with their own times, cards and readings."""
    from evsed.store.sessions import LiveSession, Store

    store = Store(db)
    start = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=count)).replace(minute=0, second=0, microsecond=0)
    first = start.isoformat(timespec="seconds")
    s = LiveSession(1, "04A1B200", "card 0", "", "local", first, 0, 0)
    store.start(s)
    store.stop(s.row_id, 9_000, 7000.0, "ev_disconnected", (start + dt.timedelta(minutes=50)).isoformat())
    at = "strftime('%Y-%m-%dT%H:%M:%S+00:00', :start, '+' || k || ' hours'{})"
    computed = {"started_at": at.format(""), "stopped_at": at.format(", '+50 minutes'"),
                "updated_at": at.format(", '+50 minutes'"), "id_tag": "printf('04A1B2%02X', k % 50)",
                "card_name": "'card ' || (k % 50)", "meter_start_wh": "k * 10000",
                "meter_last_wh": "k * 10000 + 9000", "meter_stop_wh": "k * 10000 + 9000"}
    columns = [r[1] for r in store.db.execute("PRAGMA table_info(sessions)") if r[1] != "id"]
    store.db.execute(
        f"WITH RECURSIVE seq(k) AS (SELECT 1 UNION ALL SELECT k + 1 FROM seq WHERE k < :n) "
        f"INSERT INTO sessions ({', '.join(columns)}) "
        f"SELECT {', '.join(computed.get(c, 't.' + c) for c in columns)} FROM seq, sessions t WHERE t.id = :id",
        {"start": first, "n": count - 1, "id": s.row_id})
    store.db.commit()
    store.close()


def peak_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def page_round(url: str) -> int:
    """What a page asks for, then its sessions' next page and the CSV; the CSV's size in bytes."""
    for path in PAGE:
        body = urllib.request.urlopen(url + path, timeout=60).read()
    rows = json.loads(body)
    if rows.get("next"):
        urllib.request.urlopen(f"{url}api/sessions?before={rows['next']}", timeout=60).read()
    size = 0
    with urllib.request.urlopen(url + "sessions.csv", timeout=300) as csv:
        while chunk := csv.read(65536):
            size += len(chunk)
    return size


def measure(count: int, rounds: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        seed(Path(tmp) / "sessions.db", count)
        proc = subprocess.Popen([sys.executable, str(HERE / "web.py"), "--child", tmp], stdout=subprocess.PIPE,
                                text=True)
        try:
            url = next(json.loads(line)["url"] for line in proc.stdout  # type: ignore[union-attr]
                       if line.startswith('{"url"'))
            out = {"started": rss_mb(proc.pid)}
            Path(f"/proc/{proc.pid}/clear_refs").write_text("5")  # the peak from here on (not the start's hash)
            began = time.perf_counter()
            out["csv_mb"] = page_round(url) / 2**20
            out["first round"] = rss_mb(proc.pid)
            for _ in range(rounds - 1):
                page_round(url)
            out["round_s"] = (time.perf_counter() - began) / rounds
            out[f"after {rounds} rounds"] = rss_mb(proc.pid)
            out["peak"] = peak_mb(proc.pid)
            return out
        finally:
            proc.terminate()
            proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--counts", default="1000,10000,100000")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    counts = [int(c) for c in args.counts.split(",")]
    results = {count: measure(count, args.rounds) for count in counts}
    print(f"reference: python + asyncio, sqlite3, tomllib   {reference_rss('asyncio, sqlite3, tomllib'):5.1f} MB")
    print(f"reference: the same + structlog, evsed.config   "
          f"{reference_rss('asyncio, sqlite3, tomllib, structlog, evsed.config'):5.1f} MB")
    names = [k for k in results[counts[0]] if k not in ("csv_mb", "round_s")]
    print(f"{'stored sessions':>16s} " + " ".join(f"{n:>16s}" for n in names) + f" {'CSV MB':>8s} {'round':>8s}")
    for count, r in results.items():
        ratio = r["round_s"] / results[counts[0]]["round_s"]
        print(f"{count:16,d} " + " ".join(f"{r[n]:13.1f} MB" for n in names)
              + f" {r['csv_mb']:8.1f} {ratio:7.1f}x")
    after = f"after {args.rounds} rounds"
    first, last = results[counts[0]], results[counts[-1]]
    print(f"web service RSS {after}: {first[after]:.1f} MB with {counts[0]:,} sessions, {last[after]:.1f} MB with "
          f"{counts[-1]:,}; peak {first['peak']:.1f} -> {last['peak']:.1f} MB "
          f"(target: flat within {FLAT_MB:g} MB, at most {TARGET_MB:g} MB)")
    over = [f"{count:,} sessions: peak {r['peak']:.1f} MB above {TARGET_MB:g} MB"
            for count, r in results.items() if r["peak"] > TARGET_MB]
    over += [f"{count:,} sessions: {r[after]:.1f} MB {after}, {r[after] - first[after]:.1f} MB above "
             f"{counts[0]:,} sessions' (at most {FLAT_MB:g})"
             for count, r in results.items() if r[after] - first[after] > FLAT_MB]
    if over:
        sys.exit("over target: " + "; ".join(over))


if __name__ == "__main__":
    main()
