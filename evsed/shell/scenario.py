"""Scripted scenarios: timed driver, EV and hardware actions plus expectations, on a virtual clock.

The same ConnectorControl as the daemon runs against the simulated hardware; time jumps
from one due thing (action, poll, meter read, core timer) to the next, far faster than real time.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from evsed import config as configmod
from evsed import protocol as p
from evsed.shell import commands, devices
from evsed.shell.bus import ChargerEvent
from evsed.shell.charger import Charger
from evsed.shell.expect import ExpectationError, SpanCheck, observe
from evsed.shell.connector import ConnectorControl
from evsed.shell.planfile import MemoryFile
from evsed.store.sessions import InlineWriter, Store
from hal import Notifying

EPOCH = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.timezone.utc)  # a Monday, for time-of-use windows


SPAN_KEYS = ("until", "within", "never", "events")


class ScenarioError(Exception):
    """The scenario file itself is wrong (not a failed expectation)."""


@dataclass
class Result:
    name: str
    passed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def base_config_data() -> dict:
    return tomllib.loads(resources.files("simulator").joinpath("base.toml").read_text())


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


class _VirtualTimer:
    """A callback due at a virtual time (the policy's wall-clock and load-management timers)."""

    def __init__(self, when: float, fire: Any):
        self.when, self.fire, self.cancelled = when, fire, False

    def cancel(self) -> None:
        self.cancelled = True


class Runner:
    """The wall clock is `start` (an offset date-time at the top of the file, default EPOCH) plus
    the virtual seconds, moved by `do = "clock"` steps (step_s, synced) like NTP would."""

    def __init__(self, path: Path, data: dict):
        self.path = path
        self.description = data.get("description", path.stem)
        self.steps = sorted(data.get("step", []), key=lambda s: float(s.get("t", 0.0)))
        self.data = data
        self.config = configmod.build(_merge(base_config_data(), data.get("config", {})), path)
        self.now = 0.0
        start = data.get("start", EPOCH)
        if not isinstance(start, dt.datetime) or start.tzinfo is None:
            raise ScenarioError(f"{path}: start: expected an offset date-time such as 2024-03-30T22:00:00+01:00")
        self.start, self.wall_offset_s, self.synced = start, 0.0, bool(data.get("clock_synced", True))
        self.store = Store(":memory:")
        self.plan_file = MemoryFile()  # plans.json, kept across a power cut like the store
        self.deadlines: dict[int, float | None] = {}
        self.timers: list[_VirtualTimer] = []
        self._policy_polled = -math.inf
        self.dirty = False
        self.meter_wanted = False  # a connector asked for a reading at once (a stopped session's final one)
        self.devices = devices.build(self.config, lambda: self.now)
        self.world = self.devices.world
        self.events: list[tuple[float, int, ChargerEvent]] = []  # (when, connector, event)
        self.checks: list[tuple[SpanCheck, int]] = []  # span assertions under way, by connector
        self.charger = self._make_charger()
        self.ctrls: list[ConnectorControl] = list(self.charger.connectors.values())
        for device in self.devices.all():
            if isinstance(device, Notifying):
                device.on_change(self._input_changed)

    def wallclock(self) -> dt.datetime:
        return self.start + dt.timedelta(seconds=self.now + self.wall_offset_s)

    def _call_at(self, when: float, fire: Any) -> _VirtualTimer:
        timer = _VirtualTimer(when, fire)
        self.timers.append(timer)
        return timer

    def _fire_timers(self) -> None:
        self.timers = [t for t in self.timers if not t.cancelled]
        for timer in [t for t in self.timers if t.when <= self.now]:
            self.timers.remove(timer)
            if not timer.cancelled:
                timer.fire()

    def _make_charger(self) -> Charger:
        charger = Charger(self.config, self.devices, clock=lambda: self.now, wallclock=self.wallclock,
                          writer=InlineWriter(self.store), first_session_id=self.store.next_session_id(),
                          schedule=self.deadlines.__setitem__, call_at=self._call_at,
                          clock_synced=lambda: self.synced, plan_file=self.plan_file,
                          read_meter_now=lambda cid: setattr(self, "meter_wanted", True))
        charger.bus.subscribe(lambda e: self.events.append((self.now, e.connector, e)))
        return charger

    def _power_cut(self) -> None:
        """The power goes and comes back at once: the outputs drop unpowered, nothing is shut down
        in order, and a new charger starts on the same store and hardware, as after a reboot."""
        for bench in self.world.connectors.values():
            bench.contactor_closed = False  # the coil loses its supply
            bench.pilot_mode = "off"
        self.store.recover()
        self.deadlines.clear()
        self.timers.clear()  # the old charger's policy timers go with it
        self.charger = self._make_charger()
        self.ctrls = list(self.charger.connectors.values())
        self.charger.start()

    def _input_changed(self) -> None:
        self.dirty = True

    def ctrl(self, step: dict) -> ConnectorControl:
        cid = int(step.get("connector", self.ctrls[0].id))
        for c in self.ctrls:
            if c.id == cid:
                return c
        raise ScenarioError(f"no connector {cid}")

    async def run(self, verbose: bool) -> Result:
        result = Result(self.description)
        self.charger.start()
        end = max((max(float(s.get("t", 0.0)) + float(s.get("within", 0.0)), float(s.get("until", 0.0)))
                   for s in self.steps), default=0.0)  # the last step, or the end of the last span
        next_poll, next_meter, i = 0.0, 0.0, 0
        while True:
            if self.meter_wanted:  # the daemon's meter loop stops waiting: read now
                self.meter_wanted, next_meter = False, self.now
            pending = self.pending()
            pending += [x for check, _ in self.checks for x in check.times() if x > self.now]
            step_t = float(self.steps[i].get("t", 0.0)) if i < len(self.steps) else math.inf
            t = min([next_poll, next_meter, step_t, *pending])
            if t > end:
                break
            self.advance_to(t)
            timing = self.charger.config.timing  # a reload's timing applies from the next round, as in the daemon
            if next_poll <= self.now:
                self._poll()
                next_poll = self.now + timing.pilot_poll_s
            if next_meter <= self.now:
                await self._read_meters()
                next_meter = self.now + timing.meter_interval_s
            while i < len(self.steps) and float(self.steps[i].get("t", 0.0)) <= self.now:
                step = self.steps[i]
                i += 1
                if step.get("do") == "power-cut":
                    self._power_cut()
                elif "do" in step:
                    self._do(step)
                    self._poll()
                if any(k in step for k in SPAN_KEYS):
                    self.checks.append((self._span(step), int(step.get("connector", self.ctrls[0].id))))
                elif "expect" in step:
                    self._expect(step, result, verbose)
            self._visit_checks(result, verbose)
        for check, cid in self.checks:  # spans that run past the last step end with it
            self._report(result, verbose, check.label, check.finish(self.now, self.events, cid))
        return result

    def pending(self) -> list[float]:
        """When the core's deadlines and the policy's timers are next due (virtual seconds)."""
        return ([d for d in self.deadlines.values() if d is not None]
                + [timer.when for timer in self.timers if not timer.cancelled])

    def advance_to(self, t: float) -> None:
        """Virtual time moves to t: each connector whose deadline came ticks, due timers fire."""
        self.now = max(self.now, t)
        for c in self.ctrls:
            due = self.deadlines.get(c.id)
            if due is not None and due <= self.now:
                self.deadlines[c.id] = None
                c.tick()
        self._fire_timers()

    def _span(self, step: dict) -> SpanCheck:
        t = float(step.get("t", 0.0))
        within = float(step["within"]) if "within" in step else None
        until = float(step.get("until", t + (within or 0.0)))
        if until < t:
            raise ScenarioError(f"t={t:g}: until {until:g} is before t")
        expect, never, events = step.get("expect", {}), step.get("never", {}), step.get("events")
        if events is not None and "type" not in events:
            raise ScenarioError(f"t={t:g}: events needs a type")
        label = (f"t={t:g}..{until:g}s " + ", ".join(f"{k}={v!r}" for k, v in
                 [("within", within), ("expect", expect or None), ("never", never or None), ("events", events)]
                 if v is not None))

        def holds(keys: dict[str, Any]) -> tuple[bool, str]:
            ctrl = self.ctrl(step)  # looked up each time: a power cut makes new connectors
            seen = {k: self._observe(ctrl, k, v) for k, v in keys.items()}
            return all(ok for _, ok in seen.values()), ", ".join(f"{k}={got!r}" for k, (got, _) in seen.items())
        check = SpanCheck(label, t, until, within, expect, never, events, holds)
        check.visit(self.now)
        return check

    def _visit_checks(self, result: Result, verbose: bool) -> None:
        for check, cid in list(self.checks):
            check.visit(self.now)
            if self.now >= check.until or check.failure:
                self.checks.remove((check, cid))
                self._report(result, verbose, check.label, check.finish(self.now, self.events, cid))

    def _observe(self, ctrl: ConnectorControl, key: str, want: Any) -> tuple[Any, bool]:
        policy = self._observe_policy(ctrl, key, want)
        if policy is not None:
            return policy
        try:
            return observe(self.world, ctrl, self.store, key, want)
        except ExpectationError as exc:
            raise ScenarioError(str(exc)) from None

    def _observe_policy(self, ctrl: ConnectorControl, key: str, want: Any) -> tuple[Any, bool] | None:
        """The policy's expectations (limits, binding source, mode, the site), or None for another key."""
        st = self.charger._connector_status(ctrl)
        if key == "reason_contains":  # the charger's reason: the chain's where a limit pauses
            return st.reason, want.lower() in st.reason.lower()
        if key == "binding":
            return st.binding, st.binding == want
        if key.startswith("limit_"):
            link = st.link(key[len("limit_"):])
            got = link.current_a if link else None
            return got, (got is None and want == "none") or (
                got is not None and want != "none" and abs(got - want) <= 0.15)
        if key == "mode":
            return st.mode, st.mode == want
        if key.startswith("plan"):
            return self._observe_plan(st.plan, key, want)
        if key.startswith("detail_"):  # detail_site = "meter silent": a source's detail or blocking reason
            lim = st.link(key[len("detail_"):])
            detail = (lim.blocked or lim.detail) if lim else ""
            return detail, want.lower() in detail.lower()
        if key == "grid_max_a":  # the site's highest phase current must stay at or under this
            got = max(self.world.site.grid_a())
            return got, got <= want + 0.05
        if key == "learned":
            uid = self.charger.learned.uid if self.charger.learned else None
            return uid, uid == want
        if key == "reload_contains":
            said: str = getattr(self, "last_reload", "")
            return said, want.lower() in said.lower()
        return None

    def _observe_plan(self, plan: p.PlanNow | None, key: str, want: Any) -> tuple[Any, bool] | None:
        """plan: its state (none, pending, measuring, waiting, charging, done, infeasible);
        plan_contains: its words (it says why even when it holds nothing); plan_slots:
        ["00:00-00:48"], its slots in the charger's local time."""
        if key == "plan":
            state = plan.state if plan else "none"
            return state, state == want
        if key == "plan_contains":
            reason = plan.reason if plan else ""
            return reason, want.lower() in reason.lower()
        if key == "plan_slots":
            hhmm = [dt.datetime.fromisoformat(t).astimezone(self.charger.tz).strftime("%H:%M")
                    for s in (plan.slots if plan else ()) for t in (s.start, s.end)]
            slots = [f"{a}-{b}" for a, b in zip(hhmm[::2], hhmm[1::2])]
            return slots, slots == want
        return None

    @staticmethod
    def _report(result: Result, verbose: bool, label: str, failure: str | None) -> None:
        line = label if failure is None else f"{label}: {failure}"
        (result.passed if failure is None else result.failed).append(line)
        if verbose or failure is not None:
            print(f"  {'ok  ' if failure is None else 'FAIL'} {line}")

    def _poll(self) -> None:
        self.dirty = False
        for c in self.ctrls:
            c.poll_inputs()
        if self.now >= self._policy_polled + 1.0:  # the daemon polls the contact and the clock each second
            self._policy_polled = self.now
            self.charger.policy.check_clock()
            self.charger.policy.poll()
        if self.dirty:  # an output change moved the EV: read again, as the daemon's callbacks do
            self.dirty = False
            for c in self.ctrls:
                c.poll_inputs()

    async def _read_meters(self) -> None:
        for c in self.ctrls:
            if c.meter is None:
                continue
            try:
                c.meter_sampled(await c.meter.read())
            except Exception as exc:  # a simulated meter fault
                c.meter_failed(str(exc))
        if self.devices.site_meter is not None:
            try:
                reading = await self.devices.site_meter.read()
            except Exception:  # noqa: BLE001 - a silent site meter: load management times out by itself
                return
            self.charger.site_sampled(reading)

    def _do(self, step: dict) -> None:
        """One action, through the same command definitions as the control socket."""
        args = {k: v for k, v in step.items() if k not in ("t", "do", "expect")}
        if step["do"] == "clock":  # NTP syncs, or steps the wall clock
            self.wall_offset_s += float(args.get("step_s", 0.0))
            self.synced = bool(args.get("synced", self.synced))
            self.charger.policy.check_clock()
            self.charger.policy.poll()
            return
        if step["do"] == "reload":
            try:
                new = configmod.build(_merge(_merge(base_config_data(), self.data.get("config", {})),
                                             args.get("config", {})), self.path)
            except configmod.ConfigError as exc:
                self.last_reload = str(exc)
                return
            self.last_reload = str(self.charger.reload(new))
            return
        if "profile" in args:
            args["profile"] = str(self.path.parent / args["profile"])
        actions = ", ".join(sorted(commands.HANDLERS_BY_NAME))
        if step["do"] not in commands.HANDLERS_BY_NAME:
            raise ScenarioError(f"t={step.get('t')}: unknown action {step['do']!r}; one of {actions}")
        try:
            commands.run(self.charger, p.command_named(step["do"], args))
        except (commands.CommandError, p.WireError) as exc:
            raise ScenarioError(f"t={step.get('t')}: {exc}; actions: {actions}") from None

    def _expect(self, step: dict, result: Result, verbose: bool) -> None:
        ctrl = self.ctrl(step)
        for key, want in step["expect"].items():
            got, ok = self._observe(ctrl, key, want)
            line = f"t={self.now:g}s {key} = {want!r}" if ok else f"t={self.now:g}s {key}: expected {want!r}, got {got!r}"
            (result.passed if ok else result.failed).append(line)
            if verbose or not ok:
                print(f"  {'ok  ' if ok else 'FAIL'} {line}")


def load(path: Path) -> Runner:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ScenarioError(f"{path}: {exc}") from None
    return Runner(path, data)


def run_files(paths: list[Path], verbose: bool = True) -> int:
    """Run scenario files, report each expectation; exit status 1 if any failed."""
    passed = failed = 0
    for path in paths:
        try:
            runner = load(path)
            print(f"{path}: {runner.description}")
            result = asyncio.run(runner.run(verbose))
        except (ScenarioError, configmod.ConfigError) as exc:
            print(f"  ERROR {exc}")
            failed += 1
            continue
        passed += len(result.passed)
        failed += len(result.failed)
    print(f"scenarios: {passed} expectations met, {failed} not met")
    return 0 if failed == 0 else 1
