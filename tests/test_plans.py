"""Charging plans in the daemon: set, bound, ended, stored, refused; over the control socket and
on the simulator's clock (the scenarios simulator/scenarios/plan_*.toml hold the nights)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from evsed import config
from evsed import protocol as p
from evsed.shell import commands, scenario
from evsed.shell.planfile import DiskFile, Plan, Saved, load
from tests.test_daemon import ask, running, until, write_config

START = 'start = 2026-01-05T22:59:00+01:00  # a Monday\n[config.timing]\npilot_poll_s = 0.1\n'
CHARGING = '''
[[step]]
t = 1
do = "plug"
[[step]]
t = 2
do = "tap"
card = "04A1B2C3"
'''
NIGHT = '''
[config.tariff]
energy_per_kwh = 0.30
[[config.tariff.energy]]
name = "night"
start = "00:00"
end = "06:00"
per_kwh = 0.10
'''


def run_text(tmp_path: Path, text: str) -> scenario.Runner:
    path = tmp_path / "s.toml"
    path.write_text(text)
    runner = scenario.load(path)
    result = asyncio.run(runner.run(verbose=False))
    assert result.failed == [], result.failed
    return runner


def status(runner: scenario.Runner) -> dict:
    return runner.charger._connector_status(runner.ctrls[0])


def test_a_group_default_plan_applies_to_its_cards_sessions(tmp_path):
    runner = run_text(tmp_path, START + NIGHT + '''
[[config.group]]
name = "fleet"
plan = { energy_kwh = 30, by = "06:30", days = ["mon-fri"] }
[[config.card]]
uid = "0F0F0F0F"
group = "fleet"
[[step]]
t = 1
do = "plug"
[[step]]
t = 2
do = "tap"
card = "0F0F0F0F"
[[step]]
t = 100
expect = { plan = "waiting", contactor = "open", reason_contains = "plan: waiting for 0" }
''')
    plan = status(runner).plan
    assert (plan.energy_wh, plan.by, plan.origin) == (30_000, "2026-01-06T06:30:00+01:00", "group")
    assert all(slot.price == 0.1 for slot in plan.slots) and plan.currency == "EUR"
    assert plan.cost == pytest.approx(sum(s.power_w * (_s(s.end) - _s(s.start)) / 3600 for s in plan.slots)
                                      * 0.1 / 1000, abs=0.01)


def _s(iso: str) -> float:
    return dt.datetime.fromisoformat(iso).timestamp()


def test_a_card_plan_waits_for_that_cards_next_session(tmp_path):
    runner = run_text(tmp_path, START + NIGHT + '''
[[step]]
t = 0.5
do = "plan"
card = "04A1B2C3"
energy_kwh = 10
by = "05:00"
''' + CHARGING + '''
[[step]]
t = 1.5
expect = { plan = "none" }
[[step]]
t = 100
expect = { plan = "waiting", binding = "plan" }
''')
    assert status(runner).plan.energy_wh == 10_000
    assert runner.charger.status().card_plans == ()


def test_a_plan_ends_with_its_session_and_the_next_session_charges_at_once(tmp_path):
    runner = run_text(tmp_path, START + NIGHT + CHARGING + '''
[[step]]
t = 3
do = "plan"
energy_kwh = 10
by = "05:00"
[[step]]
t = 100
expect = { plan = "waiting", contactor = "open" }
[[step]]
t = 110
do = "unplug"
[[step]]
t = 120
do = "plug"
[[step]]
t = 121
do = "tap"
card = "04A1B2C3"
[[step]]
t = 125
expect = { plan = "none", contactor = "closed" }
''')
    assert runner.charger.plans.plans == {}
    assert json.loads(runner.plan_file.read() or b"{}")["plans"] == []  # stored as ended too


def test_a_plan_ends_at_its_departure(tmp_path):
    runner = run_text(tmp_path, START + CHARGING + '''
[[step]]
t = 3
do = "plan"
energy_kwh = 50
by = "23:05"
[[step]]
t = 100  # 50 kWh in six minutes: cannot be done, charging as fast as allowed
expect = { plan = "infeasible", contactor = "closed", plan_contains = "cannot be delivered by 23:05" }
[[step]]
t = 365
expect = { plan = "none", contactor = "closed" }
''')
    assert runner.charger.plans.plans == {}
    said = [e for _, _, e in runner.events if e.type == "plan.changed"]
    assert said[0].data["state"] == "infeasible" and said[0].data["finish"] is not None
    assert said[-1].data == {"state": "none"}


def test_a_target_state_of_charge_uses_the_battery_of_the_cards_group(tmp_path):
    runner = run_text(tmp_path, START + NIGHT + '''
[[config.group]]
name = "family"
battery_kwh = 60
[[config.card]]
uid = "0F0F0F0F"
group = "family"
[[step]]
t = 1
do = "plug"
[[step]]
t = 2
do = "tap"
card = "0F0F0F0F"
[[step]]
t = 3
do = "plan"
soc_pct = 80
soc_now_pct = 35
by = "07:00"
''')
    assert status(runner).plan.energy_wh == 27_000


def run_command(tmp_path: Path, name: str, fields: dict, extra: str = "") -> str:
    path = tmp_path / "c.toml"
    path.write_text(START + NIGHT + extra + CHARGING)
    runner = scenario.load(path)
    asyncio.run(runner.run(verbose=False))
    with pytest.raises((commands.CommandError, p.WireError)) as exc:
        commands.run(runner.charger, p.command_named(name, fields))
    return str(exc.value)


@pytest.mark.parametrize("fields, message", [
    ({"by": "07:00"}, "give energy_kwh, or soc_pct with soc_now_pct"),
    ({"energy_kwh": 10, "soc_pct": 80, "by": "07:00"}, "give energy_kwh, or soc_pct"),
    ({"soc_pct": 80, "by": "07:00"}, "needs the vehicle's present state of charge"),
    ({"soc_pct": 80, "soc_now_pct": 20, "by": "07:00"}, "needs the vehicle's card group and its battery_kwh"),
    ({"energy_kwh": 10, "by": "7 o'clock"}, "by: expected HH:MM"),
    ({"energy_kwh": 10, "by": "2026-01-20T07:00:00+01:00"}, "in the coming 7 days"),
    ({"energy_kwh": 10, "by": "2026-01-06T07:00:00"}, "needs its UTC offset"),
    ({"energy_kwh": 1000, "by": "07:00"}, "energy_kwh: expected 0.1..300"),
    ({"energy_kwh": 10, "by": "07:00", "origin": "somewhere"}, "origin: expected one of"),
    ({"energy_kwh": 10, "by": "07:00", "card": "04A1B2C3", "connector": 1}, "not both"),
])
def test_a_plan_that_cannot_be_set_is_refused_saying_why(tmp_path, fields, message):
    assert message in run_command(tmp_path, "plan", fields)


def test_garbage_prices_are_refused_and_the_curve_in_force_stays(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(START + NIGHT + CHARGING)
    runner = scenario.load(path)
    asyncio.run(runner.run(verbose=False))
    good = [{"start": "2026-01-06T00:00:00+01:00", "price": 0.05}]
    assert commands.run(runner.charger, p.command_named("prices", {"prices": good, "source": "mqtt"})).entries == 1
    for garbage, message in (([{"start": "2026-13-45T00:00:00+01:00", "price": 1}], "entry 0: start: not an ISO"),
                             ([{"start": "2026-01-06T02:00:00+01:00", "price": 1},
                               {"start": "2026-01-06T01:00:00+01:00", "price": 1}], "entry 1: start: not after"),
                             ([{"start": "2026-01-05T10:00:00+01:00", "price": 1}], "every entry is in the past")):
        with pytest.raises(commands.CommandError, match=message):
            commands.run(runner.charger, p.command_named("prices", {"prices": garbage}))
    for garbage, message in (({"x": 1}, "prices: expected"),
                             ([{"start": "2026-01-06T01:00:00+01:00"}], "price missing"),
                             ([{"start": "soon", "price": 1}], "start: expected 10..32 characters"),
                             ([{"start": "2026-01-06T01:00:00+01:00", "price": 1e6}], "price: expected")):
        with pytest.raises(p.WireError, match=message):  # not a curve's shape: refused on the wire
            p.command_named("prices", {"prices": garbage})
    assert float(runner.charger.plans.curve.spans[0][2]) == 0.05
    shown = commands.run(runner.charger, p.Plans())
    assert shown.prices == "mqtt" and shown.curve[0].price == 0.3  # 22:59-23:00 from the tariff
    assert p.PricePoint(start="2026-01-05T23:00:00Z", end="2026-01-06T00:00:00Z", price=0.05) in shown.curve


def test_plans_json_is_replaced_whole_and_reads_back(tmp_path):
    file = DiskFile(tmp_path / "plans.json")
    saved = Saved((Plan(20_000, 1_767_700_000, "cli", connector=1, session=7, baseline_wh=300, delivered_wh=50),),
                  (Plan(5_000, 1_767_700_000, "mqtt", id_tag="04A1B2C3"),))
    file.write(saved.encode())
    assert load(file, _now()) == saved
    assert sorted(os.listdir(tmp_path)) == ["plans.json"]  # no temporary file left
    assert oct((tmp_path / "plans.json").stat().st_mode & 0o777) == "0o640"


def _now():
    return dt.datetime(2026, 1, 5, 22, 0, tzinfo=dt.timezone.utc)


@pytest.mark.parametrize("raw", [b"{not json", b'{"version": 9, "plans": [], "cards": []}',
                                 b'{"version": 1, "plans": [{"energy_wh": "a lot"}], "cards": []}',
                                 b'{"version": 1, "plans": [], "cards": [], "prices": {"prices": 3}}',
                                 b"[" * 100_000, b"x" * (2 << 20)])
def test_an_unreadable_plans_file_is_logged_set_aside_and_read_as_empty(tmp_path, raw):
    (tmp_path / "plans.json").write_bytes(raw)
    with capture_logs() as logs:
        assert load(DiskFile(tmp_path / "plans.json"), _now()) == Saved()
    assert [entry["event"] for entry in logs] == ["plans.unreadable"]
    assert (tmp_path / "plans.json.bad-20260105T220000").read_bytes() == raw
    assert not (tmp_path / "plans.json").exists()


def cheap_hour_later() -> str:
    """A tariff whose cheap hour starts two to three hours from now (the daemon runs on the real clock)."""
    from zoneinfo import ZoneInfo
    start = dt.datetime.now(ZoneInfo("Europe/Amsterdam")) + dt.timedelta(hours=3)
    return (f'[tariff]\nenergy_per_kwh = 0.3\n[[tariff.energy]]\nstart = "{start:%H}:00"\n'
            f'end = "{(start + dt.timedelta(hours=1)):%H}:00"\nper_kwh = 0.1\n')


def test_a_plan_set_over_the_control_socket_survives_a_restart_and_is_cancelled(tmp_path):
    cfg = config.load(write_config(tmp_path, cheap_hour_later()))

    async def scenario_():
        async with running(cfg):
            by = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=6)).isoformat(timespec="seconds")
            reply = await ask(cfg, p.SetPlan(connector=1, energy_kwh=12.5, by=by, origin="cli"))
            assert isinstance(reply, p.PlanReply) and reply.plan.state == "pending", reply
            got = await ask(cfg, p.Status())
            assert got.connectors[0].plan.energy_wh == 12_500
            bad = await ask(cfg, p.SetPrices(prices=(p.PriceEntry(start="2026-01-05T00:00", price=1),)))
            assert isinstance(bad, p.Failure) and "no UTC offset" in bad.error
        stored = json.loads((cfg.store.state_dir / "plans.json").read_text())
        assert stored["plans"][0]["energy_wh"] == 12_500
        async with running(cfg) as daemon:
            await ask(cfg, p.Plug())
            await ask(cfg, p.Tap(card="04A1B2C3"))
            await until(lambda: daemon.connectors[1].state.contactor_closed)  # measuring the EV's draw
            plan = (await ask(cfg, p.Status())).connectors[0].plan
            assert plan.state == "measuring" and plan.origin == "cli"
            assert (await ask(cfg, p.CancelPlan(connector=1))).cancelled is True
            assert (await ask(cfg, p.Status())).connectors[0].plan is None
        assert json.loads((cfg.store.state_dir / "plans.json").read_text())["plans"] == []
    asyncio.run(scenario_())


def test_a_restart_ends_the_session_not_the_plan(tmp_path):
    cfg = config.load(write_config(tmp_path))

    async def scenario_():
        async with running(cfg) as daemon:
            await ask(cfg, p.Plug())
            await ask(cfg, p.Tap(card="04A1B2C3"))
            await until(lambda: daemon.connectors[1].state.contactor_closed)
            assert isinstance(await ask(cfg, p.SetPlan(energy_kwh=10, by="07:00")), p.PlanReply)
        stored = json.loads((cfg.store.state_dir / "plans.json").read_text())["plans"]
        assert [(p["connector"], p["session"], p["energy_wh"]) for p in stored] == [(1, None, 10_000)]
    asyncio.run(scenario_())


def test_the_cli_sets_shows_and_cancels_a_plan_and_status_shows_it(tmp_path, capsys):
    from evsed import cli
    path = write_config(tmp_path, cheap_hour_later())
    cfg = config.load(path)

    def evsed(*args: str) -> tuple[int, str]:
        code = cli.main([*args, "-c", str(path)])
        out = capsys.readouterr()
        return code, out.out + out.err

    async def scenario_():
        async with running(cfg) as daemon:
            await ask(cfg, p.Plug())
            await ask(cfg, p.Tap(card="04A1B2C3"))
            await until(lambda: daemon.connectors[1].session is not None)
            by = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=6)).astimezone().isoformat(timespec="minutes")
            code, out = await asyncio.to_thread(evsed, "plan", "20kWh", "--by", by)
            assert code == 0 and "connector 1: 20.0 kWh by" in out and "(cli): measuring" in out, out
            assert "plan: measuring the EV's draw first" in out and "  slot " in out and "/kWh" in out
            code, out = await asyncio.to_thread(evsed, "status")
            assert code == 0 and "  plan: 20.0 kWh by" in out and "cost " in out, out
            code, out = await asyncio.to_thread(evsed, "plan", "80%", "--by", "07:00")
            assert code == 1 and "needs the vehicle's present state of charge" in out
            code, out = await asyncio.to_thread(evsed, "plan", "--card", "04D4E5F6", "5kWh", "--by", "06:30")
            assert code == 0 and "card 04D4E5F6: 5.0 kWh by" in out and "pending" in out, out
            code, out = await asyncio.to_thread(evsed, "plan")
            assert code == 0 and "connector 1: 20.0 kWh" in out and "card 04D4E5F6: 5.0 kWh" in out, out
            code, out = await asyncio.to_thread(evsed, "plan", "--cancel")  # the daemon's log shares stdout here
            assert code == 0 and out.splitlines()[-1] == "plan cancelled"
            code, out = await asyncio.to_thread(evsed, "plan", "--cancel")
            assert code == 0 and out.splitlines()[-1] == "no plan to cancel"
    asyncio.run(scenario_())


@pytest.mark.parametrize("text", ["lots", "20 kW", "0x5", "80 %%"])
def test_the_cli_refuses_an_energy_it_cannot_read(text, capsys):
    from evsed import cli
    with pytest.raises(SystemExit):
        cli.main(["plan", text, "--by", "07:00"])
    assert "expected an energy such as 20kWh" in capsys.readouterr().err


def test_a_plan_that_cannot_be_made_holds_nothing_and_is_said_once(tmp_path, monkeypatch):
    from evsed.core import plan as planner

    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug in the planner")
    monkeypatch.setattr(planner, "decide", broken)
    with capture_logs() as logs:
        runner = run_text(tmp_path, START + NIGHT + CHARGING + '''
[[step]]
t = 3
do = "plan"
energy_kwh = 10
by = "05:00"
[[step]]
t = 200
expect = { contactor = "closed", plan = "infeasible", plan_contains = "could not be made" }
''')
    failed = [e for e in logs if e["event"] == "plan.failed"]
    assert len(failed) == 1 and "a bug in the planner" in failed[0]["error"]
    assert "plan" not in status(runner).limits  # it neither caps nor blocks
