"""Roles on the real socket: each connection is the administrator, a service (ocpp, web, mqtt: by
the channel `evsed run` hands it, or by its user's uid) or a reader; every command a role may not
send is refused, naming the role and the command, and changes nothing: the §14a, breaker and group
caps hold, an unknown card stays refused, the daemon keeps running."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import tempfile
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from evsed import config
from evsed import protocol as p
from evsed.services.link import Channel, Link
from test_daemon import running, until, write_config

CAPPED = ('\n[site.input]\nbackend = "sim"\ncap_kw = 4.2\n'  # §14a: 4.2 kW while the contact is active
          '[[group]]\nname = "family"\nmax_current_a = 13\n')


def capped_config(tmp_path: Path) -> config.Config:
    path = write_config(tmp_path, CAPPED)
    path.write_text(path.read_text().replace("cable_a = 32 ", "cable_a = 32\nbreaker_a = 20 "))
    return config.load(path)


async def as_role(daemon, cfg, role: str) -> Link:
    """A Link with `role`, over a channel the daemon hands out, as `evsed run` hands its services."""
    return await Link.connect(cfg.store.runtime_dir, role if role in p.SERVICES else "third-party",
                              Channel(daemon.server.hand_out(role)))


def snapshot(daemon) -> tuple:
    """What a refused command could have changed."""
    charger = daemon.charger
    return (charger.mode, charger.learning, tuple(sorted(charger.reservations.items())), daemon.restart,
            len(charger.auth.links), dict(daemon.host._service_status),
            tuple((c.id, tuple(sorted(c.state.limits.items())), c.state.operative, c.state.id_tag,
                   c.state.reservation, tuple(c.state.faults)) for c in daemon.connectors.values()),
            daemon.world.connector(1).ev.plugged)


@pytest.mark.parametrize("role", [p.OCPP, p.WEB, p.MQTT, p.PRICES, p.READ])
def test_every_command_a_role_may_not_send_is_refused_and_changes_nothing(tmp_path, role):
    cfg = capped_config(tmp_path)

    async def scenario():
        async with running(cfg) as daemon:
            link = await as_role(daemon, cfg, role)
            before = snapshot(daemon)
            replies = {}
            for name, cls in sorted(p.COMMANDS.items()):
                if role not in cls.ROLES:
                    replies[name] = await link.command(p.largest(cls))
            after = snapshot(daemon)
            alive = await link.command(p.Ping())
            await link.close()
            return replies, before, after, alive

    replies, before, after, alive = asyncio.run(scenario())
    assert replies, "every role but the administrator has commands it may not send"
    for name, reply in replies.items():
        cls = p.COMMANDS[name]
        assert reply == p.Failure(error=reply.error, code="refused", role=role, cmd=cls.LABEL), (name, reply)
    assert after == before and alive == p.Ok()


@pytest.mark.parametrize("role", [p.ADMIN, p.OCPP, p.WEB, p.MQTT])
def test_the_daemons_own_caps_hold_whoever_tries_to_lift_them(tmp_path, role):
    cfg = capped_config(tmp_path)

    async def scenario():
        async with running(cfg) as daemon:
            admin = await Link.connect(cfg.store.runtime_dir, "installer")
            await admin.command(p.SetSite(input=True))  # the grid operator's contact: §14a cap active
            await admin.command(p.Plug())
            await admin.command(p.Tap(card="04A1B2C3"))
            ctrl = daemon.connectors[1]
            await until(lambda: ctrl.state.contactor_closed)
            link = admin if role == p.ADMIN else await as_role(daemon, cfg, role)
            capped = (await link.command(p.Status())).connectors[0]
            replies = [await link.command(p.Limit(source=source, connector=connector, current_a=current))
                       for source in ("external_cap", "breaker", "group", "site", "window", "hardware")
                       for connector in (0, 1) for current in (None, 32.0)]
            after = (await link.command(p.Status())).connectors[0]
            await link.close()
            if link is not admin:
                await admin.close()
            return capped, replies, after, daemon.world.connector(1).ev

    capped, replies, after, ev = asyncio.run(scenario())
    assert capped.binding == "external_cap" and capped.allowed_a == pytest.approx(6.1, abs=0.1)
    assert all(isinstance(r, p.Failure) and r.code == "refused" for r in replies), replies
    assert after.allowed_a == capped.allowed_a and after.limits == capped.limits
    assert after.limit_chain == capped.limit_chain
    assert after.link("breaker").current_a == 20 and after.link("authorization").current_a == 13


@pytest.mark.parametrize("role, source, own", [
    (p.OCPP, "ocpp", True), (p.OCPP, "mqtt", False), (p.OCPP, "web", False),
    (p.MQTT, "mqtt", True), (p.MQTT, "mqtt-pause", True), (p.MQTT, "ocpp", False),
    (p.WEB, "web", True), (p.WEB, "mqtt-pause", False), (p.ADMIN, "manual", True), (p.ADMIN, "ocpp", False),
])
def test_each_limit_source_is_one_roles(tmp_path, role, source, own):
    cfg = config.load(write_config(tmp_path))

    async def scenario():
        async with running(cfg) as daemon:
            link = (await Link.connect(cfg.store.runtime_dir, "installer") if role == p.ADMIN
                    else await as_role(daemon, cfg, role))
            reply = await link.command(p.Limit(source=source, current_a=10.0))
            await link.close()
            return reply, {k: lim.current_a for k, lim in daemon.connectors[1].state.limits.items() if lim.current_a is not None}

    reply, limits = asyncio.run(scenario())
    if own:
        assert reply == p.Ok() and limits == {source: 10.0}
    else:
        assert isinstance(reply, p.Failure) and reply.code == "refused" and reply.role == role and not limits


@pytest.mark.parametrize("role", [p.ADMIN, p.WEB, p.MQTT, p.READ])
def test_only_the_uplink_is_the_ocpp_authorizer_and_an_unknown_card_stays_refused(tmp_path, role):
    cfg = config.load(write_config(tmp_path))

    async def scenario():
        async with running(cfg) as daemon:
            link = (await Link.connect(cfg.store.runtime_dir, "installer") if role == p.ADMIN
                    else await as_role(daemon, cfg, role))
            said = await link.command(p.Authorizer(name="ocpp", timeout_s=1))
            started = await link.command(p.RemoteStart(connector=1, id_tag="DEADBEEF")) if role == p.WEB else None
            daemon.world.connector(1).plug()
            daemon.charger.present_card("DEADBEEF")
            ctrl = daemon.connectors[1]
            await until(lambda: ctrl.last_refusal is not None)
            await link.close()
            return said, started, ctrl.state.session, ctrl.last_refusal, len(daemon.charger.auth.links)

    said, started, session, refusal, links = asyncio.run(scenario())
    assert isinstance(said, p.Failure) and said.code == "refused" and links == 0
    assert session is False and refusal.id_tag == "DEADBEEF"
    if started is not None:  # the web page starts only for a card the host's list accepts
        assert isinstance(started, p.Failure) and started.code == "refused" and "DEADBEEF" in started.error


def test_the_uplink_may_restart_the_daemon_and_the_web_page_may_not(tmp_path):
    cfg = config.load(write_config(tmp_path))

    async def scenario():
        async with running(cfg) as daemon:
            web = await as_role(daemon, cfg, p.WEB)
            refused = await web.command(p.Restart())
            running_on = not daemon.stopping.is_set()
            ocpp = await as_role(daemon, cfg, p.OCPP)
            done = await ocpp.command(p.Restart())
            await daemon.stopping.wait()
            await web.close()
            await ocpp.close()
        return refused, running_on, done, daemon.exit_status

    refused, running_on, done, status = asyncio.run(scenario())
    assert refused == p.Failure(error=refused.error, code="refused", role="web", cmd="restart") and running_on
    assert done == p.RestartReply(exit_status=75) and status == 75


@pytest.mark.parametrize("granted", [False, True])
def test_the_mqtt_role_restarts_the_daemon_only_when_the_hosts_config_grants_it(tmp_path, granted):
    # enabled = false: the daemon starts no MQTT service child; the grant is read all the same
    cfg = config.load(write_config(tmp_path, "[mqtt]\nenabled = false\n" + ("restart_button = true\n" if granted else "")))

    async def scenario():
        async with running(cfg) as daemon:
            mqtt = await as_role(daemon, cfg, p.MQTT)
            web = await as_role(daemon, cfg, p.WEB)  # the grant is MQTT's alone
            web_said = await web.command(p.Restart())
            said = await mqtt.command(p.Restart())
            if granted:
                await daemon.stopping.wait()
            alive = None if granted else await mqtt.command(p.Ping())
            restarting = daemon.restart
            await mqtt.close()
            await web.close()
        return web_said, said, alive, restarting, daemon.exit_status

    web_said, said, alive, restarting, status = asyncio.run(scenario())
    assert web_said == p.Failure(error=web_said.error, code="refused", role="web", cmd="restart")
    if granted:
        assert said == p.RestartReply(exit_status=75) and restarting and status == 75
    else:
        assert said == p.Failure(error=said.error, code="refused", role="mqtt", cmd="restart")
        assert "unless the host grants it" in said.error
        assert alive == p.Ok() and not restarting and status != 75


def test_a_refusal_is_logged_once_per_client(tmp_path):
    cfg = config.load(write_config(tmp_path))

    async def scenario():
        with capture_logs() as logs:
            async with running(cfg) as daemon:
                first, second = await as_role(daemon, cfg, p.WEB), await as_role(daemon, cfg, p.READ)
                said = [await first.command(p.Restart()), await first.command(p.Reload()),
                        await first.command(p.Restart()), await second.command(p.Reload()),
                        await second.command(p.Limit(source="web", current_a=10.0))]
                await first.close()
                await second.close()
        return said, [e for e in logs if e["event"] == "control.refused"]

    said, refused = asyncio.run(scenario())
    assert [(s.code, s.role, s.cmd) for s in said] == [
        ("refused", "web", "restart"), ("refused", "web", "reload"), ("refused", "web", "restart"),
        ("refused", "read", "reload"), ("refused", "read", "limit")]
    assert [(e["role"], e["cmd"]) for e in refused] == [("web", "restart"), ("read", "reload")]


def test_a_service_speaks_only_for_its_own_role(tmp_path):
    cfg = config.load(write_config(tmp_path))

    async def scenario():
        async with running(cfg) as daemon:
            web = await as_role(daemon, cfg, p.WEB)
            hello = await web.command(p.Hello(service="ocpp"))
            told = await web.command(p.ServiceStatus(status=p.ServiceState(connected=True, queued=3)))
            status = await web.command(p.Status())
            await web.close()
            return hello, told, status

    hello, told, status = asyncio.run(scenario())
    assert isinstance(hello, p.Failure) and hello.code == "refused"  # its acknowledged events are not the uplink's
    assert told == p.Ok() and set(status.services) == {"web"} and status.services["web"].queued == 3


def test_connection_quotas_keep_slots_for_the_administrator(tmp_path):
    cfg = config.load(write_config(tmp_path))

    async def scenario():
        async with running(cfg) as daemon:
            readers = [await daemon_socket(daemon, p.READ) for _ in range(30)]
            turned_away = [r for r in readers if r is None]
            webs = [await daemon_socket(daemon, p.WEB) for _ in range(10)]
            admin = await Link.connect(cfg.store.runtime_dir, "installer")  # the CLI still gets in
            reply = await admin.command(p.Status())
            await admin.close()
            open_now = dict(daemon.server.quota.open)
            return len(turned_away), sum(w is None for w in webs), reply, open_now

    turned_away, webs_refused, reply, open_now = asyncio.run(scenario())
    assert turned_away == 30 - 16 and webs_refused == 10 - 8
    assert isinstance(reply, p.StatusReply) and open_now[p.READ] == 16 and open_now[p.WEB] == 8


async def daemon_socket(daemon, role: str):
    """One connection of `role` held open; None when the daemon turned it away (too many)."""
    server = daemon.server
    admitted, refused = server.quota.open[role], server.refused
    sock = await Channel(server.hand_out(role)).connect()
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    await until(lambda: server.quota.open[role] > admitted or server.refused > refused)
    if server.refused > refused:
        busy = p.Ping().reply(p.decode_line(await reader.readline()))
        assert isinstance(busy, p.Failure) and busy.code == "busy" and busy.role == role
        return None
    return reader, writer


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to connect as another user")
def test_a_service_under_its_own_unit_gets_its_role_from_its_users_uid(tmp_path):
    """The config maps a user to a role; a process of that uid connecting to the socket is that role."""
    reachable = Path(tempfile.mkdtemp(prefix="evsed-roles-"))  # pytest's own directories are root's alone
    path = write_config(tmp_path, '\n[control]\nweb_user = "65534"\n')  # nobody: the web page's user here
    path.write_text(path.read_text().replace(str(tmp_path / "run"), str(reachable / "run")))
    cfg = config.load(path)

    def as_nobody(source: str) -> str:
        """A request from a process of uid 65534 (forked: nothing to execute as that user)."""
        line = p.encode_line(p.Limit(source=source, current_a=10.0).to_wire())
        path = str(cfg.store.runtime_dir / "control.sock")
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: the socket opened before the uid drop would be root's, so after it
            try:
                os.close(read)
                os.setuid(65534)
                with socket.socket(socket.AF_UNIX) as sock:
                    sock.connect(path)
                    sock.sendall(line)
                    os.write(write, sock.recv(65536))
            finally:
                os._exit(0)
        os.close(write)
        with os.fdopen(read, "rb") as answer:
            said = answer.read()
        os.waitpid(pid, 0)
        return said.decode()

    async def scenario():
        async with running(cfg) as daemon:
            for directory in (reachable, cfg.store.runtime_dir):
                os.chmod(directory, 0o755)
            os.chmod(cfg.store.runtime_dir / "control.sock", 0o666)  # nobody is not in this test's group
            said = [p.Ping().reply(p.decode_line((await asyncio.to_thread(as_nobody, s)).encode()))
                    for s in ("web", "ocpp")]
            return said, {k: lim.current_a for k, lim in daemon.connectors[1].state.limits.items() if lim.current_a is not None}

    try:
        said, limits = asyncio.run(scenario())
    finally:
        shutil.rmtree(reachable, ignore_errors=True)
    assert said[0] == p.Ok()
    assert isinstance(said[1], p.Failure) and said[1].code == "refused" and said[1].role == "web"
    assert limits == {"web": 10.0}
