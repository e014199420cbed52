"""The limit chain: the current offered per phase is the lowest of every source's limit.

One Limit per source (hardware, cable, breaker, window, group, site, external cap, solar,
ocpp, plan, and any set by a command); chain() names the one that binds. The core keeps each
connector's chain (evsed.core.state.limit_chain): its offer and every reader take it from there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

from evsed.core.pilot import MIN_CURRENT_A

# Proximity pilot (PP) resistor Rc between PP and PE, and the cable's current capability
# (IEC 61851-1 Table B.2, IEC 62196-2): 1.5 kΩ 13 A, 680 Ω 20 A, 220 Ω 32 A, 100 Ω 63 A.
# The ranges the EVSE reads as each value are those of EVerest's board support, which
# take the standard's Rc tolerance and the contact and ADC error into one band each:
# (upper bound inclusive, cable A), anything at or below PP_SHORT_OHM or above the last
# band is no valid cable.
PP_BANDS_OHM = ((140.0, 63.0), (308.0, 32.0), (936.0, 20.0), (2460.0, 13.0))
PP_SHORT_OHM = 80.0
PP_OPEN_OHM = 10_000.0  # above this nothing is plugged into the socket, or the PP wire broke


@dataclass(frozen=True, slots=True)
class Limit:
    """One source's ceiling in A per phase. current_a None: the source sets no limit (not
    configured, inactive). blocked: the source forbids charging outright, with the reason."""

    source: str
    current_a: float | None
    detail: str = ""
    blocked: str | None = None


@dataclass(frozen=True, slots=True)
class ChainResult:
    """The offer (A per phase, >= 6; 0 when not charging), the source that binds, why it
    cannot charge (None: it can), every source's limit as given, and the lowest ceiling
    (allowed_a, A per phase: 0 under a blocking source; the offer when it is 6 A or more)."""

    current_a: float
    binding: str
    not_charging: str | None
    limits: tuple[Limit, ...]
    allowed_a: float = 0.0

    def ceilings(self) -> dict[str, float]:
        """source -> A of every source that sets a ceiling (a blocking one: 0 A)."""
        return {lim.source: 0.0 if lim.blocked is not None else _safe_a(lim) for lim in self.limits
                if lim.blocked is not None or lim.current_a is not None}


def chain(limits: Iterable[Limit]) -> ChainResult:
    """The lowest limit, in A per phase. A blocked source, or a lowest limit under 6 A (or
    NaN), means no charging; among equals the first listed binds (list them in CHAIN order)."""
    limits = tuple(limits)
    for lim in limits:
        if lim.blocked is not None:
            return ChainResult(0.0, lim.source, lim.blocked, limits, 0.0)
    setting = [lim for lim in limits if lim.current_a is not None]
    if not setting:
        return ChainResult(0.0, "", "no source sets a limit", limits, 0.0)
    low = min(setting, key=_safe_a)  # min() keeps the first of equals
    current_a = _safe_a(low)
    if current_a < MIN_CURRENT_A:
        why = f"{low.source} allows {current_a:.1f} A, under {MIN_CURRENT_A:g} A"
        return ChainResult(0.0, low.source, f"{why} ({low.detail})" if low.detail else why,
                           limits, current_a)
    return ChainResult(current_a, low.source, None, limits, current_a)


def _safe_a(lim: Limit) -> float:
    """A limit's current; garbage (NaN, negative) reads as 0 A, the safe side."""
    a = lim.current_a
    return 0.0 if a is None or math.isnan(a) or a < 0 else a


CHAIN = ("hardware", "cable", "breaker", "window", "group", "authorization", "site", "external_cap", "solar",
         "ocpp", "plan")  # the order of sources in status, and of precedence among equal limits
AUTHORIZATION = "authorization"  # the per-session ceiling that came with the authorization (its group's cap)


def ordered(limits: Iterable[Limit]) -> tuple[Limit, ...]:
    """Limits in CHAIN order; sources set by commands (web, mqtt, ...) after, by name."""
    return tuple(sorted(limits, key=lambda lim: (CHAIN.index(lim.source), "") if lim.source in CHAIN
                        else (len(CHAIN), lim.source)))


def hardware(max_current_a: float) -> Limit:
    return Limit("hardware", max_current_a, "charger rating")


def breaker(rating_a: float | None) -> Limit:
    """The circuit breaker feeding this connector, A per phase (None: not configured)."""
    return Limit("breaker", rating_a, "circuit breaker" if rating_a is not None else "")


def cable_fixed(rating_a: float) -> Limit:
    """A tethered cable's rating."""
    return Limit("cable", rating_a, "fixed cable")


def cable_from_pp(resistance_ohm: float | None) -> Limit:
    """A socket: the plugged cable's capability from its PP resistor (Ω; None or NaN: not
    readable). An open, shorted or out-of-band PP blocks charging, with the reason."""
    if resistance_ohm is None or math.isnan(resistance_ohm):
        return Limit("cable", None, "", "proximity pilot not readable")
    if resistance_ohm > PP_OPEN_OHM:
        return Limit("cable", None, f"PP {resistance_ohm:.0f} Ω",
                     "no cable in the socket (PP open)")
    if resistance_ohm <= PP_SHORT_OHM:
        return Limit("cable", None, f"PP {resistance_ohm:.0f} Ω",
                     "proximity pilot shorted or out of range")
    for upper_ohm, current_a in PP_BANDS_OHM:
        if resistance_ohm <= upper_ohm:
            return Limit("cable", current_a, f"PP {resistance_ohm:.0f} Ω: {current_a:g} A cable")
    return Limit("cable", None, f"PP {resistance_ohm:.0f} Ω",
                 "proximity pilot out of range (no cable coding)")


def window(allowed: bool, cap_a: float | None, reason: str) -> Limit:
    """The time-of-use decision (evsed.core.windows.Decision fields)."""
    if not allowed:
        return Limit("window", None, reason, reason)
    return Limit("window", cap_a, reason)  # also when it sets none: "no window applies", "clock not synchronized"


def group(name: str | None, max_current_a: float | None) -> Limit:
    """The free-vend group's cap (None: the group has none)."""
    return Limit("group", max_current_a, f"group {name!r}" if max_current_a is not None else "")


def authorization(group_name: str, max_current_a: float | None) -> Limit:
    """The ceiling a card's authorization brings (its group's cap), from the session's first second."""
    if max_current_a is None:
        return Limit(AUTHORIZATION, None)
    return Limit(AUTHORIZATION, max_current_a, f"card group {group_name!r}" if group_name else "with the authorization")


def site(current_a: float | None, detail: str = "dynamic load management") -> Limit:
    """This connector's share of the site from evsed.core.loadmgmt (0: paused there)."""
    return Limit("site", current_a, detail if current_a is not None else "")


def external_cap(active: bool, power_w: float, phases: int, voltage_v: float) -> Limit:
    """A grid operator's control input (ripple-control receiver, §14a EnWG): while active,
    power is capped to power_w, that is power_w / (phases × voltage_v) A per phase on the
    phases the EV draws on (4.2 kW: 6.1 A on three phases, 18.3 A on one). Until the EV's
    phases are measured, pass the connector's supply phases: the safe side."""
    if not active:
        return Limit("external_cap", None)
    current_a = power_w / (phases * voltage_v)
    return Limit("external_cap", current_a,
                 f"external cap input: {power_w / 1000:g} kW on {phases} phase(s)")


def solar(current_a: float | None, detail: str) -> Limit:
    """The solar-surplus controller's offer (None: fast mode, no limit; 0: waiting)."""
    return Limit("solar", current_a, detail)


def ocpp(current_a: float | None) -> Limit:
    """The OCPP composite schedule's limit now (None: no profile)."""
    return Limit("ocpp", current_a, "charging profile" if current_a is not None else "")


def plan(holds: bool, reason: str) -> Limit:
    """A charging plan (evsed.core.plan): outside its slots it holds the EV paused, with the reason."""
    return Limit("plan", None, reason, reason if holds else None)
