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
from evsed.shell import commands, devices
from evsed.shell.charger import Charger
from evsed.shell.connector import ConnectorControl
from evsed.store.sessions import InlineWriter, Store
from hal import Notifying

EPOCH = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.timezone.utc)  # a Monday, for time-of-use windows


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
        self.deadlines: dict[int, float | None] = {}
        self.timers: list[_VirtualTimer] = []
        self.dirty = False
        self.devices = devices.build(self.config, lambda: self.now)
        self.world = self.devices.world
        self.charger = Charger(self.config, self.devices, clock=lambda: self.now, wallclock=self.wallclock,
                               writer=InlineWriter(self.store), first_session_id=1,
                               schedule=self.deadlines.__setitem__, call_at=self._call_at,
                               clock_synced=lambda: self.synced)
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
        timing = self.config.timing
        self.charger.start()
        end = float(self.steps[-1].get("t", 0.0)) if self.steps else 0.0
        next_poll, next_meter, i = 0.0, 0.0, 0
        while True:
            pending = [d for d in self.deadlines.values() if d is not None]
            pending += [timer.when for timer in self.timers if not timer.cancelled]
            step_t = float(self.steps[i].get("t", 0.0)) if i < len(self.steps) else math.inf
            t = min([next_poll, next_meter, step_t, *pending])
            if t > end:
                break
            self.now = max(self.now, t)
            for c in self.ctrls:
                due = self.deadlines.get(c.id)
                if due is not None and due <= self.now:
                    self.deadlines[c.id] = None
                    c.tick()
            self._fire_timers()
            if next_poll <= self.now:
                self._poll()
                next_poll = self.now + timing.pilot_poll_s
            if next_meter <= self.now:
                await self._read_meters()
                next_meter = self.now + timing.meter_interval_s
            while i < len(self.steps) and float(self.steps[i].get("t", 0.0)) <= self.now:
                step = self.steps[i]
                i += 1
                if "do" in step:
                    self._do(step)
                    self._poll()
                if "expect" in step:
                    self._expect(step, result, verbose)
        return result

    def _poll(self) -> None:
        self.dirty = False
        for c in self.ctrls:
            c.poll_inputs()
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
        if step["do"] not in commands.COMMANDS:
            raise ScenarioError(f"t={step.get('t')}: unknown action {step['do']!r}; "
                                f"one of {', '.join(commands.COMMANDS)}")
        try:
            commands.run(self.charger, step["do"], args)
        except commands.CommandError as exc:
            raise ScenarioError(f"t={step.get('t')}: {exc}; actions: {', '.join(commands.COMMANDS)}") from None

    def _expect(self, step: dict, result: Result, verbose: bool) -> None:
        status = self.charger._connector_status(self.ctrl(step))
        for key, want in step["expect"].items():
            got, ok = _observe(self, status, key, want)
            line = f"t={self.now:g}s {key} = {want!r}" if ok else f"t={self.now:g}s {key}: expected {want!r}, got {got!r}"
            (result.passed if ok else result.failed).append(line)
            if verbose or not ok:
                print(f"  {'ok  ' if ok else 'FAIL'} {line}")


def _observe(runner: Runner, st: dict, key: str, want: Any) -> tuple[Any, bool]:
    """The observed value for an expectation key, and whether it matches `want`."""
    if key in ("state", "contactor", "status", "pilot_output"):
        got = st[key]
        return got, got == (None if want == "none" else want)
    if key in ("offered_a", "duty_pct", "allowed_a"):
        got = st[key]
        return got, got is not None and abs(got - want) <= 0.15
    if key == "current_a":
        got = max(st["measured"]["current_a"]) if st["measured"] else None
        return got, got is not None and abs(got - want) <= 0.5
    if key == "faults":
        got = sorted(f["fault"] for f in st["faults"])
        return got, got == sorted(want)
    if key == "lockout":
        got = any(f["lockout"] for f in st["faults"])
        return got, got == want
    if key == "binding":
        return st["binding"], st["binding"] == want
    if key.startswith("limit_"):
        got = st["limit_chain"].get(key[len("limit_"):], {}).get("current_a")
        return got, (got is None and want == "none") or (got is not None and want != "none" and abs(got - want) <= 0.15)
    if key == "mode":
        return st["mode"], st["mode"] == want
    if key.startswith("detail_"):  # detail_site = "meter silent": a source's detail or blocking reason
        lim = st["limit_chain"].get(key[len("detail_"):], {})
        got = lim.get("blocked") or lim.get("detail") or ""
        return got, want.lower() in got.lower()
    if key == "grid_max_a":  # the site's highest phase current must stay at or under this
        got = max(runner.world.site.grid_a())
        return got, got <= want + 0.05
    if key == "learned":
        got = (runner.charger.learned or {}).get("uid")
        return got, got == want
    if key == "reload_contains":
        got = getattr(runner, "last_reload", "")
        return got, want.lower() in got.lower()
    if key == "reason_contains":
        return st["reason"], want.lower() in st["reason"].lower()
    if key == "refused_contains":
        got = (st["last_refusal"] or {}).get("reason", "")
        return got, want.lower() in got.lower()
    if key == "session_energy_wh_min":
        got = st["session"]["energy_wh"] if st["session"] else None
        return got, got is not None and got >= want
    if key == "sessions":
        got = len([r for r in runner.store.sessions() if r["stopped_at"]])
        return got, got == want
    if key == "last_session":
        rows = list(runner.store.sessions())
        got = rows[-1] if rows else None
        return got, got is not None and all(_session_match(got, k, v) for k, v in want.items())
    raise ScenarioError(f"unknown expectation {key!r}")


def _session_match(row: dict, key: str, want: Any) -> bool:
    if key == "energy_wh_min":
        return row["energy_wh"] >= want
    if key == "energy_wh_max":
        return row["energy_wh"] <= want
    if key == "card":
        return want in (row["id_tag"], row["card_name"])
    if key == "running":
        return (row["stopped_at"] is None) == want
    if key not in row:
        raise ScenarioError(f"unknown session field {key!r}")
    return row[key] == want


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
