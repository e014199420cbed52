"""The MQTT service against a real mosquitto on loopback: retained state, discovery, commands, events,
a broker restart, a lost daemon, credentials. The daemon's side is a small fake of the Link
(test_mqtt_daemon.py has the real one, and the last will on kill -9 of `evsed service mqtt`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pwd
import shutil
import socket
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import aiomqtt
import pytest
from structlog.testing import capture_logs

import protocol_records as pr
from evsed import config
from evsed import protocol as p
from evsed.mqtt import service

MOSQUITTO = shutil.which("mosquitto") or next(
    (p for p in ("/usr/sbin/mosquitto", "/usr/bin/mosquitto") if os.access(p, os.X_OK)), None)
WAIT_S = 15.0  # an upper bound for one awaited message; the tests wait for messages, never for time

HELLO = p.HelloReply(version=1, charger="garage", connectors=(1,), phases=3, voltage_v=230, acked=0, last_seq=0)
IDLE = pr.status(pr.connector(
    allowed_a=32.0, measured=p.Measured(current_a=(0.0, 0.0, 0.0), power_w=0.0, energy_wh=1000, stale=False)),
    charger="garage")
CHARGING_CONNECTOR = replace(
    IDLE.connectors[0], status="Charging", state="C", contactor="closed", offered_a=16.0, allowed_a=16.0,
    measured=p.Measured(current_a=(16.0, 16.0, 16.0), power_w=11040.0, energy_wh=1200, stale=False),
    session=pr.session(card_name="Alice", started_at="2026-11-28T16:00:00Z", energy_wh=200, power_w=11040.0,
                            peak_power_w=11040.0))


class FakeLink:
    """The daemon's side of the control socket as the Link protocol shows it: canned status, recorded requests."""

    def __init__(self):
        self.hello = HELLO
        self.status = IDLE
        self.requests: list[p.Command] = []
        self.acked: list[int] = []
        self.afters: list[int] = []   # the `after` of every events() call
        self.history: list[p.Event] = []
        self.down = False
        self._changed = asyncio.Event()

    def _poke(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def emit(self, kind: str, seq: int, **fields) -> None:
        self.history.append(pr.event(kind, seq=seq, at="2026-11-28T16:00:00.000Z", **fields))
        self._poke()

    def charging(self, on: bool) -> None:
        self.status = replace(IDLE, connectors=(CHARGING_CONNECTOR,)) if on else IDLE

    def go_down(self) -> None:
        self.down = True
        self._poke()

    async def command(self, command: p.Command):
        if self.down:
            raise ConnectionRefusedError("no evsed daemon answers")
        if isinstance(command, p.Status):
            return self.status
        self.requests.append(command)
        self._poke()
        if isinstance(command, p.SetMode):
            self.status = replace(self.status, mode=command.mode)
            return p.ModeReply(mode=command.mode)
        if isinstance(command, p.Availability):
            return p.AvailabilityReply(result="Accepted")
        return p.Ok()

    async def events(self, after: int):
        self.afters.append(after)
        while True:
            changed = self._changed
            if self.down:
                raise ConnectionResetError("daemon went away")
            for event in [e for e in self.history if e.seq > after]:
                after = event.seq
                yield event
            await changed.wait()

    async def ack(self, seq: int) -> None:
        self.acked.append(seq)
        self._poke()

    async def until(self, condition) -> None:
        """Wait until condition() holds; it is checked after every request, ack and event."""
        async with asyncio.timeout(WAIT_S):
            while not condition():
                await self._changed.wait()


# --- the broker ---------------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Mosquitto:
    """One mosquitto on 127.0.0.1, started with its own config file; restartable on the same port."""

    def __init__(self, directory: Path, extra: str = ""):
        if MOSQUITTO is None:
            pytest.fail("mosquitto is not installed: `make test` installs it (apt-get install mosquitto)")
        self.dir, self.port = directory, free_port()
        self.conf = directory / "mosquitto.conf"
        user = pwd.getpwuid(os.geteuid()).pw_name  # as root, mosquitto would switch to its own user
        self.conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                             f"log_dest stderr\nuser {user}\n{extra}")
        self.log = directory / "mosquitto.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=log, stderr=log)
        deadline = time.monotonic() + WAIT_S
        while True:  # until it accepts connections
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"mosquitto did not start:\n{self.log.read_text()}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


@pytest.fixture
def broker(tmp_path):
    b = Mosquitto(tmp_path)
    b.start()
    yield b
    b.stop()


def service_config(tmp_path: Path, port: int, extra: str = "") -> config.Config:
    path = tmp_path / "evsed.toml"
    path.write_text(f"""
[charger]
id = "garage"
max_current_a = 16
[[connector]]
[connector.pilot]
backend = "sim"
[connector.contactor]
backend = "sim"
[mqtt]
url = "mqtt://127.0.0.1:{port}"
reconnect_max_s = 1
{extra}""")
    return config.load(path)


class Inbox:
    """A test's own MQTT client; wait_for() returns the first message on a topic that passes a check."""

    def __init__(self, client: aiomqtt.Client):
        self.client = client
        self.latest: dict[str, aiomqtt.Message] = {}
        # what the broker kept, as it hands it to a new subscriber (flagged retain): a later live
        # publish of the same topic reaches a subscriber unflagged, and must not hide it
        self.retained: dict[str, aiomqtt.Message] = {}

    async def wait_for(self, topic: str, payload: str | None = None) -> aiomqtt.Message:
        def fits(m):
            return m is not None and (payload is None or m.payload.decode() == payload)
        if fits(self.latest.get(topic)):
            return self.latest[topic]
        async with asyncio.timeout(WAIT_S):
            async for message in self.client.messages:
                self.latest[message.topic.value] = message
                if message.retain:
                    self.retained[message.topic.value] = message
                if message.topic.value == topic and fits(message):
                    return message
        raise AssertionError("unreachable")


@contextlib.asynccontextmanager
async def subscribed(port: int, *filters: str):
    async with aiomqtt.Client("127.0.0.1", port) as client:
        for f in filters:
            await client.subscribe(f, qos=1)
        yield Inbox(client)


@contextlib.asynccontextmanager
async def running(cfg: config.Config, link: FakeLink):
    task = asyncio.create_task(service.serve(cfg, link))
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


BASE = "evsed/garage"


# --- the tests ----------------------------------------------------------------------------------------------

def test_state_and_discovery_are_retained_for_a_late_subscriber(broker, tmp_path):
    async def scenario():
        link = FakeLink()
        async with running(service_config(tmp_path, broker.port), link):
            async with subscribed(broker.port, f"{BASE}/availability") as first:
                await first.wait_for(f"{BASE}/availability", "online")
            async with subscribed(broker.port, f"{BASE}/#", "homeassistant/#") as late:
                status = await late.wait_for(f"{BASE}/connector/1/status", "Available")
                power = await late.wait_for(f"{BASE}/connector/1/power_w", "0")
                energy = await late.wait_for(f"{BASE}/connector/1/energy_wh", "1000")
                online = await late.wait_for(f"{BASE}/availability", "online")
                found = await late.wait_for("homeassistant/device/evsed_garage/config")
        assert status.retain and power.retain and energy.retain and online.retain and found.retain
        assert json.loads(found.payload)["components"]["c1_energy"]["state_class"] == "total_increasing"
    asyncio.run(scenario())


def test_discovered_controls_send_commands_to_the_daemon(broker, tmp_path):
    async def scenario():
        link = FakeLink()
        async with running(service_config(tmp_path, broker.port), link):
            async with subscribed(broker.port, "homeassistant/device/+/config", f"{BASE}/mode") as inbox:
                found = json.loads((await inbox.wait_for("homeassistant/device/evsed_garage/config")).payload)
                controls = found["components"]
                await inbox.client.publish(controls["current_limit"]["command_topic"], "10", qos=1)
                await inbox.client.publish(controls["pause"]["command_topic"], "ON", qos=1)
                await inbox.client.publish(controls["mode"]["command_topic"], "solar", qos=1)
                await link.until(lambda: len(link.requests) == 3)
                await inbox.wait_for(f"{BASE}/mode", "solar")  # the select shows what the daemon accepted
        assert link.requests == [
            p.Limit(source="mqtt", connector=0, current_a=10.0),
            p.Limit(source="mqtt-pause", connector=0, current_a=0),
            p.SetMode(mode="solar")]
    asyncio.run(scenario())


def test_a_malformed_command_is_logged_and_ignored(broker, tmp_path):
    async def scenario():
        link = FakeLink()
        with capture_logs() as logs:
            async with running(service_config(tmp_path, broker.port), link):
                async with subscribed(broker.port, f"{BASE}/availability") as inbox:
                    await inbox.wait_for(f"{BASE}/availability", "online")
                    await inbox.client.publish(f"{BASE}/set/current_a", "lots", qos=1)
                    await inbox.client.publish(f"{BASE}/set/available", "OFF", qos=1)
                    await link.until(lambda: link.requests)
        assert link.requests == [p.Availability(connector=0, operative=False)]
        ignored = [e for e in logs if e["event"] == "mqtt.command_ignored"]
        assert len(ignored) == 1 and "expected a number" in ignored[0]["error"]
    asyncio.run(scenario())


def test_session_events_are_published_acknowledged_and_refresh_the_state(broker, tmp_path):
    async def scenario():
        link = FakeLink()
        async with running(service_config(tmp_path, broker.port), link):
            async with subscribed(broker.port, f"{BASE}/#") as inbox:
                await inbox.wait_for(f"{BASE}/availability", "online")
                link.charging(True)
                link.emit("session.started", 41, session=3, id_tag="04A1B2C3")
                started = await inbox.wait_for(f"{BASE}/connector/1/session/started")
                await inbox.wait_for(f"{BASE}/connector/1/status", "Charging")
                await inbox.wait_for(f"{BASE}/connector/1/power_w", "11040")
                await inbox.wait_for(f"{BASE}/connector/1/current_a/l2", "16.0")
                link.charging(False)
                link.emit("session.stopped", 42, session=3, energy_wh=200, reason="ev_disconnected")
                stopped = await inbox.wait_for(f"{BASE}/connector/1/session/stopped")
                await inbox.wait_for(f"{BASE}/connector/1/status", "Available")
                await link.until(lambda: 42 in link.acked)
        assert "id_tag" not in json.loads(started.payload) and not started.retain  # no card UID leaves
        assert json.loads(stopped.payload)["reason"] == "ev_disconnected"
        assert link.acked == [41, 42]
    asyncio.run(scenario())


def test_service_reconnects_after_a_broker_restart_and_resumes_the_event_stream(broker, tmp_path):
    async def scenario():
        link = FakeLink()
        async with running(service_config(tmp_path, broker.port), link):
            async with subscribed(broker.port, f"{BASE}/availability") as inbox:
                await inbox.wait_for(f"{BASE}/availability", "online")
            link.emit("connector.status", 5, status="Preparing")
            await link.until(lambda: 5 in link.acked)
            broker.stop()
            broker.start()  # same port, nothing retained (no persistence)
            async with subscribed(broker.port, f"{BASE}/#", "homeassistant/#") as inbox:
                await inbox.wait_for(f"{BASE}/availability", "online")
                await inbox.wait_for(f"{BASE}/connector/1/status", "Available")
                await inbox.wait_for("homeassistant/device/evsed_garage/config")
                await inbox.client.publish(f"{BASE}/set/mode", "fast", qos=1)
                await link.until(lambda: link.requests)
        assert link.afters[0] == 0 and link.afters[-1] == 5  # the stream resumes after what was acknowledged
        assert link.requests == [p.SetMode(mode="fast")]
    asyncio.run(scenario())


def test_availability_is_offline_while_the_daemon_is_unreachable(broker, tmp_path):
    async def scenario():
        link = FakeLink()
        async with running(service_config(tmp_path, broker.port), link):
            async with subscribed(broker.port, f"{BASE}/availability") as inbox:
                await inbox.wait_for(f"{BASE}/availability", "online")
                link.go_down()
                await inbox.wait_for(f"{BASE}/availability", "offline")
                link.down = False
                await inbox.wait_for(f"{BASE}/availability", "online")
    asyncio.run(scenario())


def test_credentials_from_the_password_file_reach_the_broker_and_are_never_logged(tmp_path):
    passwd = tmp_path / "passwd"
    passwd.write_text("")
    mosquitto_passwd = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"  # same Debian package
    if not os.access(mosquitto_passwd, os.X_OK):
        pytest.fail("mosquitto_passwd is not installed: `make test` installs mosquitto")
    subprocess.run([mosquitto_passwd, "-b", str(passwd), "evse", "s3cret-pass"], check=True, capture_output=True)
    secure = Mosquitto(tmp_path, f"allow_anonymous false\npassword_file {passwd}\n")
    secure.conf.write_text(secure.conf.read_text().replace("allow_anonymous true\n", ""))
    (tmp_path / "mqtt.secret").write_text("s3cret-pass\n")
    os.chmod(tmp_path / "mqtt.secret", 0o600)
    cfg = service_config(tmp_path, secure.port, 'username = "evse"\npassword_file = "mqtt.secret"\n')
    secure.start()

    async def scenario():
        link = FakeLink()
        with capture_logs() as logs:
            async with running(cfg, link):
                async with aiomqtt.Client("127.0.0.1", secure.port, username="evse", password="s3cret-pass") as c:
                    await c.subscribe(f"{BASE}/availability", qos=1)
                    await Inbox(c).wait_for(f"{BASE}/availability", "online")
        assert any(e["event"] == "mqtt.online" for e in logs)
        assert "s3cret" not in repr(logs)
    try:
        asyncio.run(scenario())
    finally:
        secure.stop()



def make_ca(directory: Path, name: str):
    """A CA and a server certificate for 127.0.0.1 signed by it, as PEM files: (ca.pem, cert.pem, key.pem)."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.timezone.utc)

    def cert(subject, issuer, public_key, signer, ca: bool, san=None):
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
                   .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(hours=1))
                   .not_valid_after(now + dt.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return builder.sign(signer, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} test CA")])
    ca_cert = cert(ca_name, ca_name, ca_key.public_key(), ca_key, True)
    server = cert(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]), ca_name, key.public_key(),
                  ca_key, False, [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    paths = directory / f"{name}-ca.pem", directory / f"{name}-cert.pem", directory / f"{name}-key.pem"
    paths[0].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


def test_mqtts_trusts_the_configured_ca_and_refuses_another(tmp_path):
    ca, cert, key = make_ca(tmp_path, "broker")
    other_ca, _, _ = make_ca(tmp_path, "other")
    tls = Mosquitto(tmp_path, f"cafile {ca}\ncertfile {cert}\nkeyfile {key}\n")
    tls.start()

    async def scenario():
        import ssl
        good = service_config(tmp_path, tls.port, f'ca_file = "{ca}"\n').path.read_text()
        cfg = config.parse(good.replace("mqtt://", "mqtts://"), tmp_path / "evsed.toml")
        bad = config.parse(good.replace("mqtt://", "mqtts://").replace(str(ca), str(other_ca)),
                           tmp_path / "evsed.toml")
        context = ssl.create_default_context(cafile=str(ca))
        async with aiomqtt.Client("127.0.0.1", tls.port, tls_context=context) as c:
            await c.subscribe(f"{BASE}/availability", qos=1)
            async with running(cfg, FakeLink()):
                await Inbox(c).wait_for(f"{BASE}/availability", "online")
        with capture_logs() as logs:
            async with running(bad, FakeLink()), asyncio.timeout(WAIT_S):
                while not any(e["event"] == "mqtt.disconnected" for e in logs):
                    await asyncio.sleep(0.01)  # until the refusal is logged; nothing else to await
        refusal = next(e for e in logs if e["event"] == "mqtt.disconnected")
        assert "CERTIFICATE_VERIFY_FAILED" in refusal["reason"]
    try:
        asyncio.run(scenario())
    finally:
        tls.stop()
