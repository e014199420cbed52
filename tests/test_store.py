"""Session records: durable start/checkpoint/stop, power-loss recovery, filters."""

from evsed.store.sessions import LiveSession, Store


def live(**kw) -> LiveSession:
    base = dict(connector_id=1, id_tag="04A1B2C3", card_name="Alice", card_group="family",
                auth_source="local", started_at="2026-01-05T09:00:00+00:00", meter_start_wh=1000,
                meter_last_wh=1000)
    return LiveSession(**{**base, **kw})


def test_finished_session_is_stored_with_energy_and_reason(tmp_path):
    store = Store(tmp_path / "s.db")
    s = live()
    store.start(s)
    store.checkpoint(s.row_id, 1500, 7000.0, "2026-01-05T09:30:00+00:00")
    store.stop(s.row_id, 2100, 7400.0, "ev_disconnected", "2026-01-05T10:00:00+00:00")
    store.close()
    (row,) = Store(tmp_path / "s.db").sessions()
    assert row["energy_wh"] == 1100 and row["meter_stop_wh"] == 2100
    assert row["peak_power_w"] == 7400.0 and row["stop_reason"] == "ev_disconnected"


def test_open_session_after_a_crash_closes_as_power_loss_at_last_checkpoint(tmp_path):
    store = Store(tmp_path / "s.db")
    done, running = live(), live(started_at="2026-01-05T11:00:00+00:00", meter_start_wh=3000, meter_last_wh=3000)
    store.start(done)
    store.stop(done.row_id, 2000, 7000.0, "local", "2026-01-05T10:00:00+00:00")
    store.start(running)
    store.checkpoint(running.row_id, 3600, 11000.0, "2026-01-05T11:05:00+00:00")
    del store  # no close: the process died
    store = Store(tmp_path / "s.db")
    assert store.recover() == [running.row_id]
    rows = list(store.sessions())
    assert rows[0]["stop_reason"] == "local" and rows[0]["energy_wh"] == 1000
    assert rows[1]["stop_reason"] == "power_loss"
    assert rows[1]["stopped_at"] == "2026-01-05T11:05:00+00:00"
    assert rows[1]["meter_stop_wh"] == 3600 and rows[1]["energy_wh"] == 600
    assert store.recover() == []


def test_filters_by_day_and_card(tmp_path):
    store = Store(tmp_path / "s.db")
    for day, tag in (("04", "AA"), ("05", "BB"), ("06", "AA")):
        s = live(id_tag=tag, card_name="", started_at=f"2026-01-{day}T09:00:00+00:00")
        store.start(s)
        store.stop(s.row_id, 1100, 1.0, "local", f"2026-01-{day}T10:00:00+00:00")
    assert [r["id_tag"] for r in store.sessions(card="AA")] == ["AA", "AA"]
    since = list(store.sessions(since="2026-01-05T00:00:00+00:00", until="2026-01-06T00:00:00+00:00"))
    assert [r["started_at"][:10] for r in since] == ["2026-01-05"]


def test_readonly_store_reads_beside_a_writer(tmp_path):
    writer = Store(tmp_path / "s.db")
    s = live()
    writer.start(s)
    reader = Store.open_readonly(tmp_path / "s.db")
    assert [r["id"] for r in reader.sessions()] == [s.row_id]


# --- schema versions ---------------------------------------------------------------------------

import datetime as dt  # noqa: E402
import sqlite3  # noqa: E402
from decimal import Decimal as D  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from evsed.core.tariff import DriverPrice, EnergyRate, Tariff, Window  # noqa: E402
from evsed.store import migrations  # noqa: E402
from evsed.store.samples import MeterSample, SampleBatcher  # noqa: E402

FIXTURE_V0 = Path(__file__).parent / "fixtures" / "sessions-v0.sql"
V0_COLUMNS = ("id", "connector_id", "id_tag", "card_name", "card_group", "auth_source", "started_at", "stopped_at",
              "updated_at", "meter_start_wh", "meter_last_wh", "meter_stop_wh", "energy_wh", "peak_power_w",
              "stop_reason")


def v0_database(path: Path) -> list[tuple]:
    db = sqlite3.connect(path)
    db.executescript(FIXTURE_V0.read_text())
    rows = db.execute(f"SELECT {', '.join(V0_COLUMNS)} FROM sessions ORDER BY id").fetchall()
    db.close()
    return rows


def test_a_database_of_the_first_release_upgrades_in_place_with_nothing_lost(tmp_path):
    before = v0_database(tmp_path / "s.db")
    store = Store(tmp_path / "s.db")
    assert migrations.version(store.db) == migrations.VERSION
    after = store.db.execute(f"SELECT {', '.join(V0_COLUMNS)} FROM sessions ORDER BY id").fetchall()
    assert after == before
    first = store.session(1)
    assert (first["duration_s"], first["stop_final"], first["cost_minor"]) == (72 * 60, 1, None)
    assert store.session(4)["stopped_at"] is None  # the crashed session is still open, as it was
    assert store.recover() == [4]
    assert store.session(4)["meter_stop_wh"] == 9400 and store.session(4)["duration_s"] == 300


def test_a_reader_of_a_database_an_older_daemon_still_writes_sees_the_new_columns_empty(tmp_path):
    v0_database(tmp_path / "s.db")
    rows = list(Store.open_readonly(tmp_path / "s.db").sessions())
    assert [r["energy_wh"] for r in rows] == [7123, 877, 1500, 400] and rows[0]["cost_minor"] is None


def test_a_new_database_may_be_written_only_by_code_of_its_version(tmp_path):
    store = Store(tmp_path / "s.db")
    assert migrations.min_writer(store.db) == 1  # V1 is not additive; V2 (the rebaseline flag) is


def test_a_database_from_a_newer_evsed_without_a_writer_floor_is_refused_untouched(tmp_path):
    db = sqlite3.connect(tmp_path / "s.db")
    db.execute(f"PRAGMA user_version = {migrations.VERSION + 1}")
    db.close()
    with pytest.raises(migrations.SchemaTooNew):
        Store(tmp_path / "s.db")


# --- samples, totals, durability ---------------------------------------------------------------

def t_ms(hh, mm=0):
    return int(dt.datetime(2026, 1, 5, hh, mm, tzinfo=dt.timezone.utc).timestamp() * 1000)


def priced(**kw) -> LiveSession:
    tariff = Tariff(name="t", currency="EUR", decimals=2, energy_per_kwh=D("0.30"),
                    energy=(EnergyRate("cheap", Window.parse(["mon"], "09:30", "12:00"), D("0.10")),),
                    prices={"family": DriverPrice("family", per_kwh=D("0.40"), per_session=D("1"))})
    return live(pricing=tariff.pricing("family", "UTC").to_json(), **kw)


def count_commits(store: Store) -> list[str]:
    seen: list[str] = []
    store.db.set_trace_callback(lambda sql: seen.append(sql) if sql.strip().upper() == "COMMIT" else None)
    return seen


def test_a_checkpoint_stores_its_batch_of_samples_in_one_commit(tmp_path):
    store = Store(tmp_path / "s.db")
    s = live()
    store.start(s)
    commits = count_commits(store)
    batch = [MeterSample(t_ms(9, m), 1000 + 10 * m, 7000, (10.0, 10.1, 9.9), (230.0, 231.0, 229.5)) for m in range(6)]
    store.checkpoint(s.row_id, 1050, 7000.0, "2026-01-05T09:05:00+00:00", batch)
    assert len(commits) == 1
    assert list(store.samples(s.row_id)) == batch


def test_the_batcher_keeps_one_sample_per_interval_until_taken():
    b = SampleBatcher(interval_s=10)
    wall = dt.datetime(2026, 1, 5, 9, tzinfo=dt.timezone.utc)
    kept = [b.offer(t, wall + dt.timedelta(seconds=t), 1000 + t, 7000.4) for t in range(0, 60)]
    assert sum(kept) == 6 and len(b) == 6
    rows = b.take()
    assert [r.energy_wh for r in rows] == [1000, 1010, 1020, 1030, 1040, 1050] and rows[0].power_w == 7000
    assert b.take() == []


def test_a_finished_session_has_its_totals_cost_and_revenue_from_its_samples(tmp_path):
    store = Store(tmp_path / "s.db")
    s = priced()  # starts 09:00 at 1000 Wh
    store.start(s)
    # 2 kWh by 09:30 (0.30), 1 kWh more by 10:00 (cheap from 09:30, 0.10), then idle till 10:30
    store.checkpoint(s.row_id, 3000, 7000.0, "2026-01-05T09:30:00+00:00", [MeterSample(t_ms(9, 30), 3000, 7000)])
    store.stop(s.row_id, 4000, 7000.0, "ev_disconnected", "2026-01-05T10:30:00+00:00",
               [MeterSample(t_ms(10), 4000, 2000), MeterSample(t_ms(10, 15), 4000, 0)])
    del store  # no close: durable at return
    row = Store(tmp_path / "s.db").session(s.row_id)
    assert (row["energy_wh"], row["charging_s"], row["idle_s"], row["duration_s"]) == (3000, 3600, 1800, 5400)
    assert (row["cost_minor"], row["revenue_minor"], row["currency"]) == (70, 220, "EUR")  # 60+10; 120+100


def test_a_session_without_a_tariff_has_times_but_no_money(tmp_path):
    store = Store(tmp_path / "s.db")
    s = live()
    store.start(s)
    store.stop(s.row_id, 2000, 7000.0, "local", "2026-01-05T10:00:00+00:00")
    row = store.session(s.row_id)
    assert row["charging_s"] == 3600 and row["cost_minor"] is None and row["revenue_minor"] is None


def test_samples_are_pruned_after_retention_and_sessions_kept(tmp_path):
    store = Store(tmp_path / "s.db")
    old, new = live(), live(started_at="2026-03-01T09:00:00+00:00")
    for s, day in ((old, "2026-01-05"), (new, "2026-03-01")):
        store.start(s)
        store.checkpoint(s.row_id, 1100, 1.0, f"{day}T09:30:00+00:00", [MeterSample(t_ms(9, 30), 1100)])
        store.stop(s.row_id, 1200, 1.0, "local", f"{day}T10:00:00+00:00")
    assert store.prune_samples("2026-02-01T00:00:00+00:00") == 1
    assert list(store.samples(old.row_id)) == [] and len(list(store.samples(new.row_id))) == 1
    assert len(list(store.sessions())) == 2


def test_a_meters_own_signature_is_kept_as_the_meter_gave_it(tmp_path):
    store = Store(tmp_path / "s.db")
    s = live()
    store.start(s)
    store.set_meter_signed(s.row_id, "OCMF", "OCMF|{...meter...}|{...}")
    assert store.session(s.row_id)["meter_signed_data"] == "OCMF|{...meter...}|{...}"


# --- a session's energy is its own meter delta -------------------------------------------------

def test_a_stopped_session_is_fixed_a_second_stop_writes_nothing(tmp_path):
    store = Store(tmp_path / "s.db")
    first = live()
    store.start(first)
    assert store.stop(first.row_id, 2000, 1.0, "local", "2026-01-05T10:00:00+00:00")
    assert not store.stop(first.row_id, 2003, 1.0, "local", "2026-01-05T10:00:00+00:00")
    assert store.session(first.row_id)["meter_stop_wh"] == 2000


def test_a_start_below_the_previous_stop_is_a_new_baseline_kept_as_read_and_flagged(tmp_path):
    # a replaced or reset meter: the start is what the meter said, never moved to the previous stop
    store = Store(tmp_path / "s.db")
    first = live()
    store.start(first)
    store.stop(first.row_id, 2006, 1.0, "local", "2026-01-05T10:00:00+00:00")
    second = live(started_at="2026-01-05T10:00:01+00:00", meter_start_wh=40, meter_last_wh=40)
    store.start(second)
    store.stop(second.row_id, 162, 1.0, "local", "2026-01-05T11:00:00+00:00")
    a, b = store.session(first.row_id), store.session(second.row_id)
    assert (b["meter_start_wh"], b["meter_stop_wh"], b["energy_wh"]) == (40, 162, 122)
    assert (a["meter_rebaselined"], b["meter_rebaselined"]) == (0, 1)
    assert a["energy_wh"] == 1006  # the previous session is not touched


def test_a_start_at_or_above_the_previous_stop_is_no_new_baseline(tmp_path):
    store = Store(tmp_path / "s.db")
    first = live()
    store.start(first)
    store.stop(first.row_id, 2006, 1.0, "local", "2026-01-05T10:00:00+00:00")
    second = live(started_at="2026-01-05T10:00:01+00:00", meter_start_wh=2006, meter_last_wh=2006)
    store.start(second)
    assert store.session(second.row_id)["meter_rebaselined"] == 0


def test_a_first_reading_below_the_previous_stop_flags_the_session_too(tmp_path):
    store = Store(tmp_path / "s.db")
    first = live()
    store.start(first)
    store.stop(first.row_id, 2006, 1.0, "local", "2026-01-05T10:00:00+00:00")
    second = live(started_at="2026-01-05T10:00:01+00:00", meter_start_wh=0, meter_last_wh=0)
    store.start(second)  # before the meter first answered
    store.set_meter(second.row_id, 15, 15)
    row = store.session(second.row_id)
    assert (row["meter_start_wh"], row["meter_rebaselined"]) == (15, 1)


def test_every_session_is_its_own_meter_delta_whatever_the_readings():
    from hypothesis import given, settings, strategies as st

    @settings(max_examples=60, deadline=None)
    @given(st.lists(st.tuples(st.integers(0, 3000), st.integers(0, 3000)), min_size=1, max_size=8))
    def check(plan):
        store = Store(":memory:")
        previous_stop = None
        for start_wh, drawn in plan:
            s = live(meter_start_wh=start_wh, meter_last_wh=start_wh)
            store.start(s)
            store.stop(s.row_id, start_wh + drawn, 1.0, "local", "2026-01-05T10:00:00+00:00")
            row = store.session(s.row_id)
            assert (row["meter_start_wh"], row["energy_wh"]) == (start_wh, drawn)
            assert row["meter_rebaselined"] == int(previous_stop is not None and start_wh < previous_stop)
            previous_stop = start_wh + drawn
        store.close()
    check()


def test_a_recovered_session_and_its_event_are_written_together_or_not_at_all(tmp_path):
    # The daemon tells the services of a power_loss close in the same transaction: a power cut
    # between the two would leave a session closed that the CSMS never hears has ended.
    store = Store(tmp_path / "s.db")
    running = live()
    store.start(running)
    del store  # the process died

    def cut(row):
        raise KeyboardInterrupt("power cut while recording the event")
    store = Store(tmp_path / "s.db")
    try:
        store.recover(cut)
    except KeyboardInterrupt:
        pass
    store = Store(tmp_path / "s.db")
    assert [r["stopped_at"] for r in store.sessions()] == [None]  # still open: the next start closes it
    told = []
    assert store.recover(told.append) == [running.row_id]
    assert [r["id"] for r in told] == [running.row_id] and told[0]["stop_reason"] == "power_loss"


def test_a_stopped_session_row_and_its_outbox_event_commit_together(tmp_path, monkeypatch):
    import datetime as dt

    from evsed.shell.bus import ChargerEvent
    from evsed.shell.records import Recorder
    from evsed.store import outbox
    from evsed.store.sessions import StoreWriter

    store = Store(tmp_path / "s.db")
    writer = StoreWriter(store)
    recorder = Recorder(writer, clock=lambda: 0.0, checkpoint_s=60)
    at = dt.datetime(2026, 1, 5, 10, tzinfo=dt.timezone.utc)
    base = {"session": 1, "id_tag": "04A1B2C3", "card_name": "Alice", "group": "family", "auth_source": "local",
            "started_at": "2026-01-05T09:00:00+00:00", "meter_start_wh": 1000}
    recorder(ChargerEvent("session.started", 1, at, {**base, "meter_start_unknown": False}))
    real_append = outbox.append

    def cut(db, *args):  # the outbox write fails, as if the power went between the two writes
        if args[1] == "session.stopped":
            raise OSError("power cut")
        return real_append(db, *args)
    monkeypatch.setattr(outbox, "append", cut)
    recorder(ChargerEvent("session.stopped", 1, at, {**base, "meter_stop_wh": 2000, "energy_wh": 1000,
                                                    "peak_power_w": 7000.0, "reason": "local",
                                                    "stopped_at": "2026-01-05T10:00:00+00:00"}))
    writer.close()
    (row,) = Store(tmp_path / "s.db").sessions()
    assert row["stopped_at"] is None  # not stopped without its event: recovery closes and tells it
