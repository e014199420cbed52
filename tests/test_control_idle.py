"""A command connection's idle close never answers a request (issue 26): the daemon answers what it
had read, and a service whose connection was closed asks again. The idle time passes on a fake
clock: the loop's time jumps, so the daemon's timer and the request meet in one turn of the loop."""

from __future__ import annotations

import asyncio

from evsed import config
from evsed import protocol as p
from evsed.control import client as control
from evsed.control import server as servermod
from evsed.services.link import Link
from test_daemon import running, until, write_config


class JumpingClock(asyncio.SelectorEventLoop):
    """An event loop whose time the test moves forward (and which otherwise runs as it would)."""

    def __init__(self) -> None:
        super().__init__()
        self.skipped = 0.0

    def time(self) -> float:
        return super().time() + self.skipped


def on_jumping_clock(scenario):
    loop = JumpingClock()
    try:
        return loop.run_until_complete(scenario(loop))
    finally:
        loop.close()


def test_a_request_read_as_the_idle_time_runs_out_is_answered_not_met_by_the_closing_notice(tmp_path):
    cfg = config.load(write_config(tmp_path))

    async def scenario(loop: JumpingClock):
        async with running(cfg) as daemon:
            reader, writer = await asyncio.open_unix_connection(str(control.socket_path(cfg.store.runtime_dir)),
                                                                limit=p.MAX_REPLY)
            await until(lambda: daemon.server.connections)  # its idle time counts from here
            for _ in range(3):
                await asyncio.sleep(0)  # the daemon waits for a line
            writer.write(p.encode_line(p.Status().to_wire()))  # in the socket now...
            loop.skipped += servermod.IDLE_S  # ...and the idle time is up in the same turn of the loop
            reply = p.Status().reply(p.decode_line(await reader.readline()))
            writer.close()
            return reply

    assert isinstance(on_jumping_clock(scenario), p.StatusReply)


def test_a_service_whose_idle_connection_was_closed_asks_again_and_gets_its_reply(tmp_path):
    cfg = config.load(write_config(tmp_path))

    async def scenario(loop: JumpingClock):
        async with running(cfg) as daemon:
            link = await Link.connect(cfg.store.runtime_dir, "web")
            loop.skipped += servermod.IDLE_S  # the page asks every 30 s, the daemon closes after 30 s idle
            await until(lambda: not daemon.server.connections)  # closed, its notice unread by the link
            reply = await link.command(p.Status())
            await link.close()
            return reply

    assert isinstance(on_jumping_clock(scenario), p.StatusReply)
