"""Charging plans over MQTT and Home Assistant (issue 24), against a real mosquitto and the daemon on the
simulator over its control socket: a plan set over MQTT is the daemon's (status and `evsed status` show it),
its retained topics say what it does, an impossible one is said at once, a price curve reaches the daemon."""

import asyncio
import datetime as dt
import json
from zoneinfo import ZoneInfo

from structlog.testing import capture_logs

from evsed import cli
from evsed import protocol as p
from test_daemon import ask, until
from test_mqtt_broker import broker, subscribed  # noqa: F401 - broker is a fixture
from test_mqtt_ha import BASE, C1, DISCOVERY, bridged, charge, ha_config
from test_plans import cheap_hour_later

PLAN = f"{C1}/plan"


def ahead(hours: float) -> str:
    """An ISO departure this many hours from now, with its offset."""
    return (dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=hours)).isoformat(timespec="seconds")


async def components(inbox) -> dict:
    return json.loads((await inbox.wait_for(DISCOVERY)).payload)["components"]


def test_a_plan_set_over_mqtt_is_the_daemons_is_retained_and_is_cancelled(broker, tmp_path, capsys):  # noqa: F811
    cfg = ha_config(tmp_path, broker.port, cheap_hour_later())
    by = ahead(6)

    async def scenario():
        async with bridged(cfg), subscribed(broker.port, f"{BASE}/#", DISCOVERY) as inbox:
            c = await components(inbox)
            await inbox.wait_for(f"{PLAN}/state", "none")
            await inbox.client.publish(f"{C1}/set/plan", json.dumps({"energy_kwh": 12.5, "by": by}), qos=1)
            await inbox.wait_for(f"{PLAN}/state", "pending")
            plan = (await ask(cfg, p.Status())).connectors[0].plan
            code = await asyncio.to_thread(cli.main, ["status", "-c", str(cfg.path)])
            async with subscribed(broker.port, f"{PLAN}/#", PLAN, "test/marker") as late:  # what the broker keeps
                await late.client.publish("test/marker", "end", qos=1)  # delivered after the retained ones
                await late.wait_for("test/marker")
                retained = {t: m.payload.decode() for t, m in late.retained.items()}
            cancel = c["c1_plan_cancel"]
            await inbox.client.publish(cancel["command_topic"], cancel["payload_press"], qos=1)
            await inbox.wait_for(f"{PLAN}/state", "none")
            await inbox.wait_for(f"{PLAN}/energy_kwh", "None")
            return plan, code, retained, (await ask(cfg, p.Status())).connectors[0].plan

    plan, code, retained, after = asyncio.run(scenario())
    assert (plan.energy_wh, plan.origin, plan.state) == (12_500, "mqtt", "pending")
    assert code == 0 and "  plan: 12.5 kWh by" in capsys.readouterr().out
    assert retained[f"{PLAN}/energy_kwh"] == "12.5" and retained[f"{PLAN}/state"] == "pending"
    assert dt.datetime.fromisoformat(retained[f"{PLAN}/by"]) == dt.datetime.fromisoformat(by)
    assert json.loads(retained[PLAN])["origin"] == "mqtt" and retained[f"{PLAN}/infeasible"] == "OFF"
    assert after is None


def test_home_assistants_energy_and_departure_set_the_plan_together(broker, tmp_path):  # noqa: F811
    cfg = ha_config(tmp_path, broker.port)
    hhmm = (dt.datetime.now(ZoneInfo(cfg.charger.timezone)) + dt.timedelta(hours=3)).strftime("%H:%M")

    async def scenario():
        with capture_logs() as logs:
            async with bridged(cfg), subscribed(broker.port, f"{BASE}/#", DISCOVERY) as inbox:
                c = await components(inbox)
                energy, departure = c["c1_plan_energy"], c["c1_plan_by"]
                await inbox.wait_for(departure["state_topic"], "None")
                for _ in range(2):
                    await inbox.client.publish(energy["command_topic"], "400", qos=1)  # past the number's max
                await inbox.client.publish(energy["command_topic"], "8", qos=1)
                await until(lambda: any(e["event"] == "mqtt.plan_waiting" for e in logs))
                alone = (await ask(cfg, p.Status())).connectors[0].plan
                await inbox.client.publish(departure["command_topic"], hhmm, qos=1)
                await inbox.wait_for(energy["state_topic"], "8.0")
                await inbox.wait_for(departure["state_topic"], hhmm)
                await inbox.client.publish(energy["command_topic"], "10", qos=1)  # again: the same departure
                await inbox.wait_for(energy["state_topic"], "10.0")
                return alone, (await ask(cfg, p.Status())).connectors[0].plan, logs

    alone, plan, logs = asyncio.run(scenario())
    assert alone is None  # an energy alone waits for its departure
    (waiting,) = [e for e in logs if e["event"] == "mqtt.plan_waiting"]
    assert waiting["needs"] == "plan_by" and waiting["energy_kwh"] == 8
    refused = [e for e in logs if e["event"] == "mqtt.command_ignored"]
    assert len(refused) == 1 and "'400' out of range 0.1..300 kWh" in refused[0]["error"]
    assert (plan.energy_wh, plan.origin) == (10_000, "mqtt")
    assert plan.by[11:16] == hhmm and dt.datetime.fromisoformat(plan.by) > dt.datetime.now(dt.timezone.utc)


def test_a_plan_that_cannot_finish_in_time_is_published_as_such_at_once(broker, tmp_path):  # noqa: F811
    cfg = ha_config(tmp_path, broker.port)

    async def scenario():
        async with bridged(cfg) as daemon, subscribed(broker.port, f"{BASE}/#", DISCOVERY) as inbox:
            problem = (await components(inbox))["c1_plan_infeasible"]
            await charge(cfg, daemon)
            await inbox.wait_for(f"{C1}/charging", "ON")
            await inbox.client.publish(f"{C1}/set/plan", json.dumps({"energy_kwh": 200, "by": ahead(1)}), qos=1)
            await inbox.wait_for(problem["state_topic"], "ON")
            reason = (await inbox.wait_for(f"{PLAN}/reason")).payload.decode()
            return problem, reason, json.loads(inbox.latest[PLAN].payload), daemon.connectors[1].state.contactor_closed

    problem, reason, plan, closed = asyncio.run(scenario())
    assert problem["device_class"] == "problem"
    assert "cannot be delivered by" in reason and "charging as fast as allowed" in reason
    assert plan["state"] == "infeasible" and plan["shortfall_wh"] > 0 and plan["finish"] is not None
    assert closed  # and it charges on


def test_a_price_curve_published_to_set_prices_is_the_daemons_and_a_bad_one_is_refused_once(broker, tmp_path):  # noqa: F811
    cfg = ha_config(tmp_path, broker.port)
    hour = dt.datetime.now(dt.timezone.utc).replace(minute=0, second=0, microsecond=0) + dt.timedelta(hours=1)
    curve = [{"start": (hour + dt.timedelta(hours=h)).isoformat(), "price": 0.30 if h % 3 else 0.05}
             for h in range(24)]
    late_first = json.dumps([curve[1], curve[0]])  # out of order: the daemon refuses it whole

    async def scenario():
        with capture_logs() as logs:
            async with bridged(cfg), subscribed(broker.port, f"{BASE}/availability") as inbox:
                await inbox.wait_for(f"{BASE}/availability", "online")
                for _ in range(2):
                    await inbox.client.publish(f"{BASE}/set/prices", late_first, qos=1)
                # retained, as a bridge publishes its prices: the service takes it, and again after a reconnect
                await inbox.client.publish(f"{BASE}/set/prices", json.dumps({"prices": curve}), qos=1, retain=True)
                await until(lambda: any(e["event"] == "mqtt.command" for e in logs), timeout_s=10)
                shown = await ask(cfg, p.Plans())
        return shown, logs

    shown, logs = asyncio.run(scenario())
    assert shown.prices == "mqtt"
    prices = {dt.datetime.fromisoformat(point.start): point.price for point in shown.curve}
    assert prices[hour] == 0.05 and prices[hour + dt.timedelta(hours=1)] == 0.30
    refused = [e for e in logs if e["event"] == "mqtt.command_refused"]
    assert len(refused) == 1 and refused[0]["error"].startswith("prices:"), refused
    (taken,) = [e for e in logs if e["event"] == "mqtt.command"]
    assert taken["request"]["entries"] == 24
