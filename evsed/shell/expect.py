"""What a scenario can assert: the charger's status, what the simulated hardware really does,
the session records and the events, at an instant or over a span of virtual time.

A step with `expect` alone holds at its time `t`. With `within`, it must come true no later
than t + within; with `until`, it must then stay true until that time; `never` must not hold
at any instant of [t, until]; `events` counts events of [t, until]. Instants are every point
the runner visits (each pilot poll, meter read, core deadline, step and span boundary).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

from evsed.shell.bus import ChargerEvent

DEFAULT_TOLERANCE = {"offered_a": 0.15, "duty_pct": 0.15, "allowed_a": 0.15, "current_a": 0.5,
                     "ev_current_a": 0.5, "hw_duty_pct": 0.15, "hw_pilot_v": 0.05}


class ExpectationError(ValueError):
    """The scenario asks for something that does not exist (a typo, not a failed expectation)."""


def _number(got: Any, want: Any, key: str) -> bool:
    """want: a number (the key's default tolerance) or {value, tol}: 26.6 apart from 26.7 needs tol < 0.1."""
    tol = DEFAULT_TOLERANCE.get(key, 0.0)
    if isinstance(want, dict):
        if set(want) - {"value", "tol"} or "value" not in want:
            raise ExpectationError(f"{key}: expected a number or {{ value = N, tol = T }}, got {want!r}")
        want, tol = want["value"], want.get("tol", tol)
    if want == "none":
        return got is None
    return got is not None and abs(got - want) <= tol


def observe(world: Any, ctrl: Any, store: Any, key: str, want: Any) -> tuple[Any, bool]:
    """The observed value for an expectation key, and whether it matches `want`."""
    st = ctrl.status()
    bench = world.connector(ctrl.id)
    if key in ("state", "contactor", "status", "pilot_output", "error_code"):
        got = st[key]
        return got, got == (None if want == "none" else want)
    if key in ("offered_a", "duty_pct", "allowed_a"):
        return st[key], _number(st[key], want, key)
    if key == "current_a":  # what the charger's meter measured
        got = max(st["measured"].current_a) if st["measured"] and st["measured"].current_a else None
        return got, _number(got, want, key)
    if key == "meter_stale":
        got = bool(st["measured"] and st["measured"].stale)
        return got, got == want
    # what the hardware really does, not what was commanded
    if key == "hw_contactor":
        got = "closed" if bench.contactor_closed else "open"
        return got, got == want
    if key == "hw_duty_pct":  # the duty on the wire, as the EV sees it
        got = bench.pwm_duty()
        return got, _number(got, want, key)
    if key == "hw_pilot_v":  # the high level the pilot's ADC reads
        reading = ctrl.read_pilot()
        got = getattr(reading, "high_v", None)
        return got, _number(got, want, key)
    if key == "ev_current_a":  # what the EV draws (the meter may lag or lie)
        got = max(bench.current_a(), default=0.0)
        return got, _number(got, want, key)
    if key == "faults":
        got = sorted(f.fault for f in st["faults"])
        return got, bool(got) if want == "any" else got == sorted(want)
    if key == "fault_detail_contains":
        details = [f.detail for f in st["faults"]]
        return details, any(want.lower() in d.lower() for d in details)
    if key == "lockout":
        got = any(f.lockout for f in st["faults"])
        return got, got == want
    if key == "reason_contains":
        return st["reason"], want.lower() in st["reason"].lower()
    if key == "refused_contains":
        got = st["last_refusal"].reason if st["last_refusal"] else ""
        return got, want.lower() in got.lower()
    if key == "session_energy_wh_min":
        got = st["session"].energy_wh if st["session"] else None
        return got, got is not None and got >= want
    if key == "session_running":
        got = st["session"] is not None
        return got, got == want
    if key == "sessions":  # finished sessions
        got = len([r for r in store.sessions() if r["stopped_at"]])
        return got, got == want
    if key == "sessions_total":  # running ones too
        got = len(list(store.sessions()))
        return got, got == want
    if key == "last_session":
        rows = list(store.sessions())
        got = rows[-1] if rows else None
        return got, got is not None and all(_session_match(got, k, v) for k, v in want.items())
    raise ExpectationError(f"unknown expectation {key!r}")


def _session_match(row: dict[str, Any], key: str, want: Any) -> bool:
    if key == "energy_wh_min":
        return bool(row["energy_wh"] >= want)
    if key == "energy_wh_max":
        return bool(row["energy_wh"] <= want)
    if key == "card":
        return want in (row["id_tag"], row["card_name"])
    if key == "running":
        return (row["stopped_at"] is None) == want
    if key not in row:
        raise ExpectationError(f"unknown session field {key!r}")
    return bool(row[key] == want)


def _event_matches(e: ChargerEvent, want: dict[str, Any]) -> bool:
    if e.type != want["type"]:
        return False
    return all(e.data.get(k) == v for k, v in want.items() if k not in ("type", "min", "max", "connector"))


@dataclass
class SpanCheck:
    """One step's assertion over [t, until] (see the module docstring)."""

    label: str
    t: float
    until: float
    within: float | None
    expect: dict[str, Any]
    never: dict[str, Any]
    events: dict[str, Any] | None
    holds: Callable[[dict[str, Any]], tuple[bool, str]]  # (all keys hold, what was seen)
    came_true_at: float | None = None
    failure: str = ""
    done: bool = False
    seen: list[str] = field(default_factory=list)

    def times(self) -> list[float]:
        """The instants the runner must visit for this check."""
        return [self.t, self.until] + ([self.t + self.within] if self.within is not None else [])

    def visit(self, now: float) -> None:
        if self.done or now < self.t or self.failure:
            return
        if self.expect and now <= self.until + 1e-9:
            ok, seen = self.holds(self.expect)
            if self.came_true_at is None:
                if ok:
                    self.came_true_at = now
                elif now >= self.t + (self.within or 0.0) - 1e-9:
                    self.failure = (f"not true {'by' if self.within else 'at'} "
                                    f"t={self.t + (self.within or 0.0):g}s: {seen}")
            elif not ok:
                self.failure = f"stopped holding at t={now:g}s (true since t={self.came_true_at:g}s): {seen}"
        if self.never and now <= self.until + 1e-9:
            ok, seen = self.holds(self.never)
            if ok:
                self.failure = f"happened at t={now:g}s: {seen}"

    def finish(self, now: float, events: list[tuple[float, int, ChargerEvent]], connector: int) -> str | None:
        """Called once the runner has passed `until`; returns the failure, or None when it held."""
        self.done = True
        if self.failure:
            return self.failure
        if self.events is not None:
            want = self.events
            n = sum(1 for at, cid, e in events
                    if self.t <= at <= self.until and cid == want.get("connector", connector)
                    and _event_matches(e, want))
            lo, hi = want.get("min", 0), want.get("max", math.inf)
            if not lo <= n <= hi:
                return f"{n} {want['type']} events in [{self.t:g}, {self.until:g}] s, expected {lo}..{hi}"
        return None
