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
