"""The MQTT service process: the daemon's status and events to a broker, commands back, over the control socket.

Reconnects to the broker and the daemon with back-off; never in the safety path (docs/protocol.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ssl
from typing import Any, AsyncIterator, Awaitable, Callable, Protocol, TypeVar
from zoneinfo import ZoneInfo

import aiomqtt
import structlog

from evsed import protocol as p
from evsed.config import Config, ConfigError
from evsed.control.client import ControlError
from evsed.mqtt import publish
from evsed.mqtt import topics as tp
from evsed.mqtt.discovery import discovery_payload, discovery_topic, rules
from evsed.mqtt.settings import MqttSettings, parse
from evsed.services.link import LinkError, resume_after

log = structlog.get_logger("evsed")
R = TypeVar("R", bound=p.Reply)
QOS = 1
MAX_REFUSALS = 64          # command topics whose last refusal is remembered (to log it once)
OFFLINE_TIMEOUT_S = 2.0   # the goodbye "offline" on a clean stop; the broker's will covers a crash
LINK_ERRORS = (LinkError, OSError, EOFError, ControlError)  # the daemon went away or answered garbage


class Link(Protocol):
    hello: p.HelloReply

    async def command(self, command: p.Command[R]) -> R | p.Failure: ...

    def events(self, after: int) -> AsyncIterator[p.Event]: ...

    async def ack(self, seq: int) -> None: ...


class LinkDown(Exception):
    """The control socket failed; the service goes offline and reconnects after a back-off."""


class Backoff:
    """Doubling delays from first_s up to max_s; reset once a connection is up and working."""

    def __init__(self, first_s: float, max_s: float):
        self.first_s, self.max_s = first_s, max_s
        self.delay_s = first_s

    def next(self) -> float:
        delay, self.delay_s = self.delay_s, min(self.delay_s * 2, self.max_s)
        return delay

    def reset(self) -> None:
        self.delay_s = self.first_s


async def serve(config: Config, link: Link) -> None:
    """Run the MQTT service for config's [mqtt] table until cancelled; raises ConfigError on a bad table."""
    settings = parse(config)
    try:
        tls = _tls_context(settings)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(config.path, None, "[mqtt] ca_file", f"cannot use {settings.ca_file}: {exc}") from None
    await Bridge(settings, link, tls).run()


def _tls_context(settings: MqttSettings) -> ssl.SSLContext | None:
    if not settings.tls:
        return None
    return ssl.create_default_context(cafile=str(settings.ca_file) if settings.ca_file else None)


class Bridge:
    """One charger between the control socket and one broker."""

    def __init__(self, settings: MqttSettings, link: Link, tls: ssl.SSLContext | None = None,
                 first_retry_s: float = 1.0, now: Callable[[], dt.datetime] | None = None):
        self.settings, self.link, self.tls = settings, link, tls
        zone = ZoneInfo(settings.timezone)
        self.now = now or (lambda: dt.datetime.now(zone))
        self.topics = tp.Topics(settings.base_topic)
        self.rules = rules(settings, link.hello)
        self.modes: tuple[str, ...] = tp.MODES  # those the charger can follow, from its last status
        self.retained: dict[str, str] = {}  # what a broker should hold; republished after every reconnect
        self.seq = resume_after(link.hello)  # the last event published and acknowledged (new here: from now)
        self.ignored = 0                     # refused commands, counted
        self.refusals: dict[str, str] = {}   # topic -> why its last command was refused: logged once a streak
        self.drafts: dict[int, tp.PlanDraft] = {}  # connector -> the plan Home Assistant's entities set, by halves
        self.refresh = asyncio.Event()
        # a status fetched and published, or an event published, whole: a status answered before a
        # session's stop never overwrites the stop's final figure on the broker
        self.publishing = asyncio.Lock()
        self.backoff = Backoff(first_retry_s, settings.reconnect_max_s)
        self.ha_status = f"{settings.discovery_prefix}/status"
        self.prices_topic = self.topics.command("prices")

    async def run(self) -> None:
        s = self.settings
        while True:
            _raise_if_cancelling()
            log.info("mqtt.connecting", host=s.host, port=s.port, tls=s.tls, username=s.username,
                     client_id=s.client_id)
            reason = "connection ended"
            try:
                async with self._client() as client:
                    await self._connected(client)
            except aiomqtt.MqttError as exc:
                reason = f"broker: {exc}"
            except LinkDown as exc:
                reason = f"daemon: {exc}"
            delay = self.backoff.next()
            log.warning("mqtt.disconnected", reason=reason, retry_in_s=delay)
            await asyncio.sleep(delay)

    def _client(self) -> aiomqtt.Client:
        s = self.settings
        return aiomqtt.Client(
            s.host, s.port, username=s.username, password=s.password, identifier=s.client_id,
            will=aiomqtt.Will(self.topics.availability, "offline", qos=QOS, retain=True),
            keepalive=s.keepalive_s, tls_context=self.tls, timeout=10)

    async def _connected(self, client: aiomqtt.Client) -> None:
        try:
            for pattern in self.topics.command_filters():
                await client.subscribe(pattern, qos=QOS)
            if self.settings.discovery:
                await client.subscribe(self.ha_status, qos=QOS)
            self._remember(self._state(await self._status()))
            await self._announce(client)
            await self._publish(client, tp.Message(self.topics.availability, "online"))
            log.info("mqtt.online", base_topic=self.settings.base_topic, after=self.seq)
            self.backoff.reset()
            await _first_failure(self._pump_events(client), self._refresh_state(client), self._commands(client))
        finally:
            # A clean goodbye: the broker sends the will only when the connection breaks.
            with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                await client.publish(self.topics.availability, "offline", qos=QOS, retain=True,
                                     timeout=OFFLINE_TIMEOUT_S)

    async def _announce(self, client: aiomqtt.Client) -> None:
        """Discovery and every retained state topic: after a (re)connect and Home Assistant's birth."""
        if self.settings.discovery:
            await client.publish(discovery_topic(self.settings),
                                 discovery_payload(self.settings, self.link.hello, self.modes), qos=QOS, retain=True)
        for topic, payload in list(self.retained.items()):
            await client.publish(topic, payload, qos=QOS, retain=True)

    async def _pump_events(self, client: aiomqtt.Client) -> None:
        try:
            async for event in self.link.events(self.seq):
                async with self.publishing:
                    for message in publish.event_messages(self.topics, event, card_uids=self.settings.card_uids):
                        await self._publish(client, message)
                seq = event.seq
                if seq is not None and seq > self.seq:
                    await self.link.ack(seq)
                    self.seq = seq
                self.refresh.set()
        except LINK_ERRORS as exc:
            raise LinkDown(f"event stream: {exc!r}") from exc
        raise LinkDown("event stream ended")

    async def _refresh_state(self, client: aiomqtt.Client) -> None:
        """State topics come from status replies, fetched after events (coalesced) and every status_interval_s."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.status_interval_s):  # not wait_for: it can swallow a cancel
                    await self.refresh.wait()
            self.refresh.clear()
            async with self.publishing:
                for message in self._state(await self._status()):
                    if self.retained.get(message.topic) != message.payload:
                        await self._publish(client, message)

    async def _commands(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            topic, payload = message.topic.value, _bytes(message.payload)
            if topic == self.ha_status:
                if payload == b"online":  # Home Assistant (re)started: tell it again
                    await self._announce(client)
                continue
            if topic == self.prices_topic and not payload:  # the retained curve cleared: the daemon keeps its own
                continue
            if message.retain and topic != self.prices_topic:  # a retained curve is the curve: taken too
                self._refused("mqtt.command_ignored", topic, "retained: commands act once, when sent")
                continue
            try:
                asked = tp.command_request(self.topics, topic, payload, self.rules)
            except tp.BadCommand as exc:
                self._refused("mqtt.command_ignored", topic, str(exc))
                continue
            req = self._plan_from_part(topic, asked) if isinstance(asked, tp.PlanPart) else asked
            if req is None:
                continue
            reply = await self._command(req)
            refusal = _refusal(reply)
            if refusal is None:
                self.refusals.pop(topic, None)
                log.info("mqtt.command", topic=topic, request=_shown(req))
            else:
                self._refused("mqtt.command_refused", topic, refusal, request=_shown(req))
            self.refresh.set()

    def _plan_from_part(self, topic: str, part: tp.PlanPart) -> p.SetPlan | None:
        """The plan a number's energy or a text's departure completes; None while the other is unknown."""
        draft, plan = tp.complete_plan(part, self.drafts.get(part.connector, tp.PlanDraft()))
        self.drafts[part.connector] = draft
        if plan is None:
            self.refusals.pop(topic, None)
            log.info("mqtt.plan_waiting", topic=topic, connector=part.connector, energy_kwh=draft.energy_kwh,
                     by=draft.by, needs="plan_by" if draft.by is None else "plan_energy_kwh")
        return plan

    def _refused(self, event: str, topic: str, error: str, **context: Any) -> None:
        """Count a refused command; log it once while the same command keeps being refused the same way
        (an automation repeating a bad value must not flood the journal)."""
        self.ignored += 1
        if self.refusals.get(topic) != error:
            if len(self.refusals) >= MAX_REFUSALS:  # topics are a client's to invent: keep the memory bounded
                self.refusals.clear()
            self.refusals[topic] = error
            log.warning(event, topic=topic, error=error, ignored=self.ignored, **context)

    def _state(self, reply: p.StatusReply) -> list[tp.Message]:
        self.modes = reply.modes
        for c in reply.connectors:
            self.drafts[c.id] = tp.seen_plan(self.drafts.get(c.id, tp.PlanDraft()), c.plan)
        return publish.state_messages(self.topics, reply, self.now(), card_uids=self.settings.card_uids,
                                      currency_decimals=self.settings.currency_decimals)

    async def _status(self) -> p.StatusReply:
        reply = await self._command(p.Status())
        if isinstance(reply, p.Failure):
            raise LinkDown(f"status refused: {reply.error}")
        return reply

    async def _command(self, command: p.Command[R]) -> R | p.Failure:
        try:
            return await self.link.command(command)
        except LINK_ERRORS as exc:
            raise LinkDown(f"{command.LABEL}: {exc!r}") from exc

    async def _publish(self, client: aiomqtt.Client, message: tp.Message) -> None:
        await client.publish(message.topic, message.payload, qos=QOS, retain=message.retain)
        if message.retain:
            self.retained[message.topic] = message.payload

    def _remember(self, messages: list[tp.Message]) -> None:
        self.retained.update((m.topic, m.payload) for m in messages if m.retain)


def _refusal(reply: p.Reply | p.Failure) -> str | None:
    """Why the daemon did not do what a command asked (refused it, or answered Rejected), or None."""
    if isinstance(reply, p.Failure):
        return reply.error
    if isinstance(reply, p.StartReply) and reply.result == "Rejected":
        return f"start rejected: {reply.reason or 'no reason given'}"
    if isinstance(reply, p.StopReply) and reply.result == "Rejected":
        return "stop rejected: no session runs"
    return None


def _shown(req: p.Command[Any]) -> Any:
    """A command as the log shows it: a price curve by its size, not its hundreds of entries."""
    if isinstance(req, p.SetPrices):
        return {"command": req.CMD, "entries": len(req.prices), "start": req.prices[0].start if req.prices else None}
    return publish.clean(req.to_wire())


def _bytes(payload: Any) -> bytes:
    if isinstance(payload, (bytes, bytearray)):
        return bytes(payload)
    return b"" if payload is None else str(payload).encode()


async def _first_failure(*jobs: Awaitable[None]) -> None:
    """Run jobs together until one ends or fails; cancel the others and raise its error."""
    tasks = [asyncio.ensure_future(job) for job in jobs]
    try:
        _raise_if_cancelling()
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()
    finally:
        while pending := [t for t in tasks if not t.done()]:
            for task in pending:
                task.cancel()
            await asyncio.wait(pending, timeout=0.5)  # and cancel again: see _raise_if_cancelling
        for task in tasks:
            if not task.cancelled():
                task.exception()  # retrieved: the first failure is the one raised


def _raise_if_cancelling() -> None:
    # Python 3.11's asyncio.wait_for (which aiomqtt awaits publishes with) returns the result instead of
    # raising when a cancel lands as its future completes; the task then runs on with cancelling() > 0.
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
