"""The web service's reads against the length of the history it serves: a page round (the page, its
report and charts, the sessions table and its next page, the CSV export) over HTTP on a real store,
each read's cost counted in SQLite's own steps, not timed."""

from __future__ import annotations

import datetime as dt

from evsed.store.sessions import LiveSession, Store
from test_web_service import run

STEPS = 1000  # SQLite virtual machine instructions per count


def seed(db, count: int) -> None:
    """count finished sessions one an hour up to now (this month's are the same at any count): the
    first through the store, the rest copied from it in SQL with their own start times."""
    store = Store(db)
    start = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=count)).replace(minute=0, second=0, microsecond=0)
    first = LiveSession(1, "04A1B200", "card 0", "", "local", start.isoformat(timespec="seconds"), 0, 0)
    store.start(first)
    store.stop(first.row_id, 9_000, 7000.0, "ev_disconnected", (start + dt.timedelta(minutes=50)).isoformat())
    at = "strftime('%Y-%m-%dT%H:%M:%S+00:00', :start, '+' || k || ' hours'{})"
    computed = {"started_at": at.format(""), "stopped_at": at.format(", '+50 minutes'"),
                "updated_at": at.format(", '+50 minutes'")}
    columns = [r[1] for r in store.db.execute("PRAGMA table_info(sessions)") if r[1] != "id"]
    store.db.execute(
        f"WITH RECURSIVE seq(k) AS (SELECT 1 UNION ALL SELECT k + 1 FROM seq WHERE k < :n) "
        f"INSERT INTO sessions ({', '.join(columns)}) "
        f"SELECT {', '.join(computed.get(c, 't.' + c) for c in columns)} FROM seq, sessions t WHERE t.id = :id",
        {"start": first.started_at, "n": count - 1, "id": first.row_id})
    store.close()


def round_reads(tmp_path, monkeypatch, count: int) -> list[int]:
    """The cost of each read (each connection the service opens) in one page round over count
    stored sessions, in thousands of SQLite steps."""
    tmp_path.mkdir()
    seed(tmp_path / "sessions.db", count)
    reads: list[list[int]] = []
    open_readonly = Store.open_readonly.__func__  # type: ignore[attr-defined]

    def counted(cls, path):
        store = open_readonly(cls, path)
        steps = [0]
        reads.append(steps)

        def step() -> int:
            steps[0] += 1
            return 0  # go on
        store.db.set_progress_handler(step, STEPS)
        return store
    monkeypatch.setattr(Store, "open_readonly", classmethod(counted))

    async def body(service, client, link):
        for path in ("/", "/api/view", "/api/report", "/usage/day.svg", "/usage/hour.svg"):
            async with client.get(path) as r:
                assert r.status == 200, path
        async with client.get("/api/sessions") as r:
            before = (await r.json())["next"]
        until = dt.date.today().isoformat()  # a filter's bound beside the page's key
        async with client.get(f"/api/sessions?before={before}&until={until}") as r:
            page = [row["id"] for row in (await r.json())["sessions"]]
        assert page == list(range(before - 1, before - 501, -1))  # the 500 before it, newest first
        async with client.get("/sessions.csv") as r:
            lines = (await r.text()).splitlines()
        assert [int(line.split(",")[0]) for line in lines[1:]] == list(range(1, count + 1))  # each once, in order
    run(tmp_path, body)
    return [steps[0] for steps in reads]


def test_no_read_of_a_page_round_costs_more_with_a_longer_history(tmp_path, monkeypatch):
    # sessions and the CSV come a page at a time: a page deep in a long history must cost what
    # the first one does (a page that walked the index from the oldest session cost them all)
    short = round_reads(tmp_path / "short", monkeypatch, 1_000)
    long = round_reads(tmp_path / "long", monkeypatch, 20_000)
    assert max(long) <= 1.25 * max(short), (max(short), max(long), sorted(long)[-5:])
