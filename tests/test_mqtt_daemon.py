"""The MQTT service end to end: `evsed run` on the simulator starts `evsed service mqtt` for its [mqtt] table,
which talks to a real mosquitto. A simulated session shows up on the charger's topics, MQTT commands reach the
charger's limit chain, and the charger reads offline whenever the service is gone."""

import asyncio
import json
import signal

from evsed import protocol as p
from evsed import config
from test_daemon import ask, running, until, write_config
from test_mqtt_broker import broker, subscribed  # noqa: F401 - broker is a fixture

BASE = "evsed/evsed-sim"  # config/simulator.toml's charger id


def mqtt_config(tmp_path, port, extra=""):
    return config.load(write_config(tmp_path, f'[mqtt]\nurl = "mqtt://127.0.0.1:{port}"\n{extra}'))


def test_a_simulated_session_and_mqtt_commands_through_the_daemon(broker, tmp_path):  # noqa: F811
    cfg = mqtt_config(tmp_path, broker.port, '[site.meter]\nbackend = "sim"\n')  # solar needs a site meter

    async def scenario():
        async with running(cfg), subscribed(broker.port, f"{BASE}/#") as inbox:
            await inbox.wait_for(f"{BASE}/availability", "online")
            await inbox.wait_for(f"{BASE}/connector/1/status", "Available")
            await inbox.client.publish(f"{BASE}/set/current_a", "10", qos=1)
            await inbox.wait_for(f"{BASE}/connector/1/allowed_a", "10.0")
            await inbox.wait_for(f"{BASE}/current_limit_a", "10.0")
            await ask(cfg, p.Plug())
            await ask(cfg, p.Tap(card="04A1B2C3"))
            started = await inbox.wait_for(f"{BASE}/connector/1/session/started")
            await inbox.wait_for(f"{BASE}/connector/1/status", "Charging")
            await inbox.client.publish(f"{BASE}/set/pause", "ON", qos=1)
            await inbox.wait_for(f"{BASE}/paused", "ON")
            await inbox.client.publish(f"{BASE}/set/mode", "solar", qos=1)
            await inbox.wait_for(f"{BASE}/mode", "solar")
            await ask(cfg, p.Unplug())
            stopped = await inbox.wait_for(f"{BASE}/connector/1/session/stopped")
            limit = json.loads((await inbox.wait_for(f"{BASE}/connector/1/limit")).payload)
        return json.loads(started.payload), json.loads(stopped.payload), limit

    started, stopped, limit = asyncio.run(scenario())
    assert "id_tag" not in started and started["card_name"] == "Alice"
    assert stopped["session"] == started["session"] and stopped["reason"] == "ev_disconnected"
    # the pause holds (a blocking source reads 0 A) beside the 10 A limit; which of the blocking sources
    # binds depends on whether solar mode has seen the site meter yet (solar: no surplus, 0 A)
    assert limit["limits"]["mqtt-pause"] == 0 and limit["limits"]["mqtt"] == 10
    assert limit["binding"] in ("mqtt-pause", "solar")


def test_the_last_will_marks_the_charger_offline_when_the_service_is_killed(broker, tmp_path):  # noqa: F811
    cfg = mqtt_config(tmp_path, broker.port)

    async def scenario():
        async with running(cfg) as daemon, subscribed(broker.port, f"{BASE}/availability") as inbox:
            await inbox.wait_for(f"{BASE}/availability", "online")
            killed = daemon.services.procs["mqtt"]
            killed.send_signal(signal.SIGKILL)  # no goodbye from the service: only the broker's will
            offline = await inbox.wait_for(f"{BASE}/availability", "offline")
            async with subscribed(broker.port, f"{BASE}/availability") as later:
                retained = await later.wait_for(f"{BASE}/availability")
            await inbox.wait_for(f"{BASE}/availability", "online")  # the daemon started it again
            return offline.payload, retained, killed.returncode, daemon.services.procs["mqtt"] is not killed

    offline, retained, returncode, restarted = asyncio.run(scenario())
    assert offline == b"offline" and retained.payload == b"offline" and retained.retain
    assert returncode == -signal.SIGKILL and restarted


def test_a_stopped_service_says_offline_itself(broker, tmp_path):  # noqa: F811
    cfg = mqtt_config(tmp_path, broker.port)

    async def scenario():
        async with running(cfg) as daemon, subscribed(broker.port, f"{BASE}/availability") as inbox:
            await inbox.wait_for(f"{BASE}/availability", "online")
            proc = daemon.services.procs["mqtt"]
            proc.terminate()  # systemctl stop: a clean disconnect, after which the broker sends no will
            await inbox.wait_for(f"{BASE}/availability", "offline")
            await until(lambda: proc.returncode is not None)
            return proc.returncode

    assert asyncio.run(scenario()) == 0
