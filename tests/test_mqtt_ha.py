"""What Home Assistant sees, against a real mosquitto and the daemon on the simulator over its control socket:
the MQTT service runs in this process (its logs captured), as `evsed service mqtt` runs it beside the daemon.
One test per thing a homeowner would see wrong (issues 23 and 25)."""

import asyncio
import contextlib
import datetime as dt
import json
import re
from zoneinfo import ZoneInfo

import pytest
from structlog.testing import capture_logs

from evsed import config
from evsed import protocol as p
from evsed.mqtt import service
from evsed.services.link import Link
from evsed.web.faults import clock
from evsed.store.sessions import Store
from test_daemon import ask, running, until, write_config
from test_mqtt_broker import broker, subscribed  # noqa: F401 - broker is a fixture

BASE = "evsed/evsed-sim"  # config/simulator.toml's charger id
C1 = f"{BASE}/connector/1"
DISCOVERY = "homeassistant/device/evsed_evsed-sim/config"
UID = "04A1B2C3"  # Alice's card in config/simulator.toml


def ha_config(tmp_path, port, extra=""):
    # enabled = false: `evsed run` starts no service child; the test runs the service itself
    return config.load(write_config(tmp_path, f'[mqtt]\nurl = "mqtt://127.0.0.1:{port}"\nenabled = false\n'
                                              f'reconnect_max_s = 1\n{extra}'))


@contextlib.asynccontextmanager
async def bridged(cfg):
    """The daemon, and the MQTT service on a real control-socket link to it."""
    async with running(cfg) as daemon:
        link = await Link.connect(cfg.store.runtime_dir, "mqtt")
        task = asyncio.create_task(service.serve(cfg, link))
        try:
            yield daemon
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await link.close()


async def charge(cfg, daemon):
    await ask(cfg, p.Plug())
    await ask(cfg, p.Tap(card=UID))
    await until(lambda: daemon.connectors[1].state.contactor_closed)


def test_the_session_energy_published_after_a_stop_equals_the_stored_session(broker, tmp_path):  # noqa: F811
    # Readings every 2 s; the EV is unplugged once it has drawn 2 Wh more than the last reading shows,
    # so the session's final reading (after the open) is more than its last sample while charging.
    cfg = ha_config(tmp_path, broker.port, "[timing]\nmeter_interval_s = 2\n")

    async def scenario():
        async with bridged(cfg) as daemon, subscribed(broker.port, f"{C1}/session/#") as inbox:
            ctrl, bench = daemon.connectors[1], daemon.world.connector(1)
            await charge(cfg, daemon)
            await inbox.wait_for(f"{C1}/session/started")
            await until(lambda: ctrl.last_reading is not None and ctrl.last_reading.power_total_w > 0)
            sample = ctrl.last_reading
            await until(lambda: ctrl.last_reading is not sample)  # a fresh reading: 2 s until the next

            def drawn_since_the_last_reading() -> float:
                bench.integrate()
                return bench.energy_wh_exact - ctrl.last_reading.energy_import_wh
            await until(lambda: drawn_since_the_last_reading() >= 2)
            await ask(cfg, p.Unplug())
            last = await inbox.wait_for(f"{C1}/session/last")
            await until(lambda: not ctrl.state.contactor_closed)
            opened = ctrl.last_reading
            await until(lambda: ctrl.last_reading is not opened, timeout_s=10)  # the reading after the open
            return json.loads(last.payload), inbox

    last, inbox = asyncio.run(scenario())
    (row,) = Store(cfg.store.state_dir / "sessions.db").sessions()
    assert row["energy_wh"] == last["energy_wh"] == int(inbox.latest[f"{C1}/session/energy_wh"].payload)
    assert last["meter_stop_wh"] == row["meter_stop_wh"]


def test_a_current_outside_the_discovered_range_is_refused_and_logged_once(broker, tmp_path):  # noqa: F811
    cfg = ha_config(tmp_path, broker.port)

    async def scenario():
        with capture_logs() as logs:
            async with bridged(cfg), subscribed(broker.port, f"{BASE}/#", DISCOVERY) as inbox:
                number = json.loads((await inbox.wait_for(DISCOVERY)).payload)["components"]["current_limit"]
                await inbox.wait_for(f"{BASE}/current_limit_a", "None")
                for _ in range(2):
                    await inbox.client.publish(number["command_topic"], "3", qos=1)
                await inbox.client.publish(number["command_topic"], "10", qos=1)
                await inbox.wait_for(f"{BASE}/current_limit_a", "10.0")
                status = await ask(cfg, p.Status())
        return number, logs, status

    number, logs, status = asyncio.run(scenario())
    assert (number["min"], number["max"]) == (6, 32)  # config/simulator.toml's max_current_a
    refused = [e for e in logs if e["event"] == "mqtt.command_ignored"]
    assert len(refused) == 1 and "'3' out of range 6..32 A" in refused[0]["error"]
    assert not [e for e in logs if e["event"] == "limit.changed" and e.get("current_a") == 3]
    assert status.connectors[0].limits["mqtt"] == 10


def test_the_lift_button_removes_the_mqtt_limit(broker, tmp_path):  # noqa: F811
    cfg = ha_config(tmp_path, broker.port)

    async def scenario():
        async with bridged(cfg), subscribed(broker.port, f"{BASE}/#", DISCOVERY) as inbox:
            controls = json.loads((await inbox.wait_for(DISCOVERY)).payload)["components"]
            await inbox.client.publish(controls["current_limit"]["command_topic"], "12", qos=1)
            await inbox.wait_for(f"{BASE}/current_limit_a", "12.0")
            lift = controls["lift_current_limit"]
            await inbox.client.publish(lift["command_topic"], lift["payload_press"], qos=1)
            await inbox.wait_for(f"{BASE}/current_limit_a", "None")
            return await ask(cfg, p.Status())

    assert "mqtt" not in asyncio.run(scenario()).connectors[0].limits


def test_the_mode_select_offers_only_what_works_and_solar_is_refused_with_the_reason(broker, tmp_path):  # noqa: F811
    cfg = ha_config(tmp_path, broker.port)  # the simulator has no site meter

    async def scenario():
        with capture_logs() as logs:
            async with bridged(cfg), subscribed(broker.port, f"{BASE}/#", DISCOVERY) as inbox:
                select = json.loads((await inbox.wait_for(DISCOVERY)).payload)["components"]["mode"]
                await inbox.wait_for(f"{BASE}/modes", '["fast"]')
                await inbox.client.publish(select["command_topic"], "solar", qos=1)
                await inbox.client.publish(select["command_topic"], "fast", qos=1)
                await inbox.wait_for(f"{BASE}/mode", "fast")
                await until(lambda: any(e["event"] == "mqtt.command" for e in logs))
                status = await ask(cfg, p.Status())
        return select, logs, status

    select, logs, status = asyncio.run(scenario())
    assert select["options"] == ["fast"]
    (refused,) = [e for e in logs if e["event"] == "mqtt.command_refused"]
    assert "solar needs a site meter ([site.meter])" in refused["error"]
    assert status.mode == "fast"


def test_with_a_site_meter_the_select_offers_the_solar_modes(broker, tmp_path):  # noqa: F811
    cfg = ha_config(tmp_path, broker.port, '[site.meter]\nbackend = "sim"\n')

    async def scenario():
        async with bridged(cfg), subscribed(broker.port, f"{BASE}/#", DISCOVERY) as inbox:
            select = json.loads((await inbox.wait_for(DISCOVERY)).payload)["components"]["mode"]
            await inbox.client.publish(select["command_topic"], "min+solar", qos=1)
            await inbox.wait_for(f"{BASE}/mode", "min+solar")
            return select

    assert asyncio.run(scenario())["options"] == ["fast", "solar", "min+solar"]


def test_the_fault_sensor_says_the_rcd_trip_and_when_it_retries(broker, tmp_path):  # noqa: F811
    cfg = ha_config(tmp_path, broker.port)
    zone = ZoneInfo(cfg.charger.timezone)

    async def scenario():
        async with bridged(cfg) as daemon, subscribed(broker.port, f"{BASE}/#") as inbox:
            await charge(cfg, daemon)
            await inbox.wait_for(f"{C1}/allowed_a", "32.0")
            await inbox.wait_for(f"{C1}/fault", "none")
            del inbox.latest[f"{C1}/fault"]  # the next one: published only when it changes
            before = dt.datetime.now(zone)
            await ask(cfg, p.InjectFault(kind="rcd"))
            await inbox.wait_for(f"{C1}/problem", "ON")
            fault = (await inbox.wait_for(f"{C1}/fault")).payload.decode()
            after = dt.datetime.now(zone)
            await inbox.wait_for(f"{C1}/allowed_a", "0.0")
            await inbox.wait_for(f"{C1}/charging", "OFF")
            return fault, before, after

    fault, before, after = asyncio.run(scenario())
    retry = cfg.timing.rcd_retry_s
    assert re.fullmatch(r"RCD tripped, retry at \d\d:\d\d", fault)
    assert fault[-5:] in {clock(before + dt.timedelta(seconds=retry), zone),
                          clock(after + dt.timedelta(seconds=retry), zone)}


def test_unavailable_during_a_session_is_shown_pending_until_the_unplug(broker, tmp_path):  # noqa: F811
    cfg = ha_config(tmp_path, broker.port)

    async def scenario():
        async with bridged(cfg) as daemon, subscribed(broker.port, f"{BASE}/#") as inbox:
            await charge(cfg, daemon)
            await inbox.wait_for(f"{C1}/status", "Charging")
            await inbox.client.publish(f"{BASE}/set/available", "OFF", qos=1)
            await inbox.wait_for(f"{BASE}/available_pending", "ON")
            during = inbox.latest[f"{BASE}/available"].payload
            await ask(cfg, p.Unplug())
            await inbox.wait_for(f"{BASE}/available", "OFF")
            await inbox.wait_for(f"{BASE}/available_pending", "OFF")
            await inbox.wait_for(f"{C1}/status", "Unavailable")
            return during

    assert asyncio.run(scenario()) == b"ON"  # what is true now: the session runs on until the unplug


def test_no_card_uid_in_any_retained_message_but_the_cards_name_and_group(broker, tmp_path):  # noqa: F811
    cfg = ha_config(tmp_path, broker.port, '[tariff]\ncurrency = "EUR"\n[tariff.price]\nper_kwh = 0.40\n')

    async def scenario():
        async with bridged(cfg) as daemon, subscribed(broker.port, f"{BASE}/#", DISCOVERY) as inbox:
            await charge(cfg, daemon)
            await inbox.wait_for(f"{C1}/plugged", "ON")
            await inbox.wait_for(f"{C1}/charging", "ON")
            await inbox.wait_for(f"{C1}/session/card", "Alice")
            await inbox.wait_for(f"{C1}/session/group", "family")
            await inbox.wait_for(f"{C1}/session/cost")
            found = json.loads((await inbox.wait_for(DISCOVERY)).payload)
            await ask(cfg, p.Unplug())
            await inbox.wait_for(f"{C1}/session/last")
            await inbox.wait_for(f"{C1}/plugged", "OFF")
            async with subscribed(broker.port, "#") as late:  # everything the broker keeps
                await late.client.publish("test/marker", "end", qos=1)  # delivered after the retained ones
                await late.wait_for("test/marker")
                return found, {t: m.payload.decode() for t, m in late.retained.items()}

    found, retained = asyncio.run(scenario())
    assert f"{C1}/session/last" in retained and f"{C1}/session/card" in retained
    assert [t for t, payload in retained.items() if UID in payload] == []
    assert json.loads(retained[f"{C1}/session/last"])["card_name"] == "Alice"
    assert found["components"]["c1_session_cost"]["unit_of_measurement"] == "EUR"


def test_start_and_stop_buttons_start_and_end_a_session(broker, tmp_path):  # noqa: F811
    cfg = ha_config(tmp_path, broker.port, 'start_card = "Alice"\n')  # a start charges on a card the config knows

    async def scenario():
        async with bridged(cfg) as daemon, subscribed(broker.port, f"{BASE}/#", DISCOVERY) as inbox:
            buttons = json.loads((await inbox.wait_for(DISCOVERY)).payload)["components"]
            await ask(cfg, p.Plug())
            await inbox.wait_for(f"{C1}/plugged", "ON")
            await inbox.client.publish(buttons["c1_start"]["command_topic"], buttons["c1_start"]["payload_press"])
            await inbox.wait_for(f"{C1}/charging", "ON")
            await inbox.client.publish(buttons["c1_stop"]["command_topic"], buttons["c1_stop"]["payload_press"])
            stopped = json.loads((await inbox.wait_for(f"{C1}/session/stopped")).payload)
            await until(lambda: not daemon.connectors[1].state.contactor_closed)
            return stopped

    stopped = asyncio.run(scenario())
    assert stopped["reason"] == "remote" and stopped["auth_source"] == "remote"
    (row,) = Store(cfg.store.state_dir / "sessions.db").sessions()
    assert (row["id_tag"], row["card_name"]) == (UID, "Alice")


def test_without_the_hosts_grant_no_restart_button_is_discovered_and_a_press_restarts_nothing(broker, tmp_path):  # noqa: F811
    cfg = ha_config(tmp_path, broker.port)

    async def scenario():
        with capture_logs() as logs:
            async with bridged(cfg) as daemon, subscribed(broker.port, DISCOVERY, f"{BASE}/#") as inbox:
                components = json.loads((await inbox.wait_for(DISCOVERY)).payload)["components"]
                await inbox.client.publish(f"{BASE}/set/restart", "PRESS", qos=1)
                await inbox.client.publish(f"{BASE}/set/pause", "ON", qos=1)  # after the press, in order
                await inbox.wait_for(f"{BASE}/paused", "ON")
                alive = await ask(cfg, p.Ping())
                restarting = daemon.stopping.is_set() or daemon.restart
        return components, logs, alive, restarting

    components, logs, alive, restarting = asyncio.run(scenario())
    assert "restart" not in components and "pause" in components
    assert alive == p.Ok() and not restarting
    (ignored,) = [e for e in logs if e["event"] == "mqtt.command_ignored"]
    assert ignored["topic"] == f"{BASE}/set/restart" and "restart_button = true" in ignored["error"]


def test_with_the_hosts_grant_the_restart_button_restarts_the_daemon(broker, tmp_path):  # noqa: F811
    cfg = ha_config(tmp_path, broker.port, "restart_button = true\n")

    async def scenario():
        async with bridged(cfg) as daemon, subscribed(broker.port, DISCOVERY) as inbox:
            restart = json.loads((await inbox.wait_for(DISCOVERY)).payload)["components"]["restart"]
            await inbox.client.publish(restart["command_topic"], restart["payload_press"], qos=1)
            await until(lambda: daemon.stopping.is_set() or daemon.restart, timeout_s=15)
        return daemon.exit_status

    assert asyncio.run(scenario()) == 75  # EX_TEMPFAIL: the service manager starts the daemon again


def test_a_silent_meter_makes_power_unavailable_not_an_old_value(broker, tmp_path):  # noqa: F811
    cfg = ha_config(tmp_path, broker.port, "[timing]\nmeter_interval_s = 0.2\nstop_grace_s = 1\nmeter_timeout_s = 2\n")

    async def scenario():
        async with bridged(cfg) as daemon, subscribed(broker.port, f"{BASE}/#", DISCOVERY) as inbox:
            power = json.loads((await inbox.wait_for(DISCOVERY)).payload)["components"]["c1_power"]
            await charge(cfg, daemon)
            await inbox.wait_for(f"{C1}/reading", "fresh")
            await ask(cfg, p.InjectFault(kind="meter"))
            await inbox.wait_for(f"{C1}/reading", "stale")
            await ask(cfg, p.ClearFault(kind="meter"))
            await inbox.wait_for(f"{C1}/reading", "fresh")
            return power

    power = asyncio.run(scenario())
    assert {"topic": f"{C1}/reading", "payload_available": "fresh", "payload_not_available": "stale"} \
        in power["availability"] and power["availability_mode"] == "all"
