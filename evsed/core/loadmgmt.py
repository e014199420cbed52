"""Dynamic load management and solar surplus: how much of the site each connector may use.

step() shares the room a site (grid) meter leaves under the main breaker between the
connectors; solar_step() turns export into an offer. Pure: monotonic seconds, no I/O.

The rules of step(), per phase (0..2, L1..L3; a one-phase supply has breaker 0 on the rest):
  - room = breaker - (site current - our EVs' measured current) - headroom, at each reading;
    the EVs' offers together never get more than the room (their budget), less what an EV
    drew at the reading beyond what it was allowed then (its offer; a lowered one's old offer
    in its grace): an EV that takes a little more than offered costs everyone, itself too.
  - An overload is answered at the reading that shows it: offers drop at once. A raise waits
    raise_interval_s after the last raise and must be worth raise_step_a (damping).
  - A connector whose share falls under 6 A pauses (offer 0) for min_pause_s, and resumes
    when its share reaches 6 A plus resume_margin_a.
  - Room as measured: no raise or start spends room an EV may still be using. Another EV
    holds, on each of its phases, the most of its offer, its old offer for the grace after a
    lowering (grace_s; stop_grace_s when paused), and what it drew at the last reading. So a
    new session waits ("waiting for ... to lower", until) until the others were lowered for
    their grace AND a reading shows them drawing less (or opened, below), and only then
    starts: never over the budget, even briefly.
  - An EV that draws more than it may (its offer; in a lowering's grace, the old offer), on a
    phase where the site is over its budget or another connector waits for room, is opened at
    the reading that shows it (Offer.overcurrent: the core raises its overcurrent fault), however
    small the excess: the core's own overcurrent margin (2 A or 10 %) does not cover the site.
  - Shared by what EVs draw: an EV that draws at every reading for max(grace_s,
    raise_interval_s) 2 x draw_margin_a or more under its offer is offered what it draws
    plus draw_margin_a (at least 6 A) while another shares a phase with it; the rest goes to
    the others. The ceiling goes when it draws within draw_margin_a / 2 of it, and every
    reoffer_interval_s it is offered its fair share again, to see whether it takes more.
  - The site meter silent for meter_timeout_s (or not read yet): the budget becomes fallback_a
    per phase for all EVs together, so the EVs are at it at most meter_timeout_s + grace_s
    after the last reading. The fallback only lowers: no offer rises and no session starts
    until a reading shows the room. Status says so.
  - Sharing: "equal" (max-min fair over the phases each EV uses; if that leaves someone
    under 6 A, the lowest-ranked of those pauses) or "priority" (by rank, each takes what it
    can). With min_first, every connector that wants current first gets 6 A, in rank order
    as far as the room goes, before any gets more. Rank: priority, then already charging,
    then connector id.
  - Turns ("equal", rotate_s > 0): while a connector waits for 6 A, one of its priority that
    has been offered current for rotate_s gives way (the longest turn first, paused for
    min_pause_s but resuming without resume_margin_a), and the longest-waiting one ranks first.
So the EVs draw more than the budget in force at some moment of the last grace plus a meter
period (the stop grace, if longer) only while an EV rises over its offer by itself, until the
next reading opens it; an EV that ignores a lowering, by however little, is opened at the first
reading past its grace. The site exceeds the breaker only when other loads rose by more than
the headroom since a reading: for at most one meter period plus the grace (with the meter
silent, until the fallback plus the grace), unless the other loads alone exceed it.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field, replace
from typing import Callable, Collection, Sequence

from evsed.core.pilot import MAX_ABOVE_A, MIN_CURRENT_A

PHASES = 3
PHASE_DRAWN_A = 1.0  # an EV draws on a phase when it takes more than this there
_EPS = 1e-9


@dataclass(frozen=True, slots=True)
class SiteConfig:
    """The site as load management sees it. Currents in A per phase, times in seconds."""

    breaker_a: tuple[float, float, float] = (25.0, 25.0, 25.0)  # main fuse; 0: no such phase
    headroom_a: float = 1.0
    fallback_a: float = 6.0  # all EVs together, per phase, while the site meter is silent (lowers only)
    meter_timeout_s: float = 10.0
    grace_s: float = 5.0  # an EV's time to follow a lower offer (the core's current grace)
    stop_grace_s: float = 6.0  # ... and to stop for a pause (the core's stop grace)
    raise_interval_s: float = 30.0
    raise_step_a: float = 1.0
    min_pause_s: float = 120.0  # peers use 60-300 s
    resume_margin_a: float = 1.0
    share: str = "equal"  # or "priority"
    min_first: bool = False  # every wanting connector gets 6 A before any gets more
    draw_margin_a: float = 1.0  # an EV drawing less than offered keeps this much above its draw
    reoffer_interval_s: float = 300.0  # ... and is offered its fair share again this often
    rotate_s: float = 1800.0  # "equal": a turn's length while another waits for 6 A (0: no turns)


@dataclass(frozen=True, slots=True)
class Demand:
    """One connector's wish. max_a: its chain limit without the site (under 6 A: it wants
    nothing). phases: those its EV draws on, all the connector's until measured. faulted: the
    core holds its contactor open (it wants nothing, and its EV can draw nothing meanwhile)."""

    connector: str
    max_a: float
    phases: tuple[int, ...] = (0, 1, 2)
    measured_a: tuple[float, float, float] = (0.0, 0.0, 0.0)
    priority: int = 0
    faulted: bool = False


@dataclass(frozen=True, slots=True)
class Share:
    """What step() remembers of one connector."""

    offer_a: float = 0.0
    phases: tuple[int, ...] = (0, 1, 2)
    committed_a: float = 0.0  # the EV may still draw this much (a lowered offer) ...
    committed_until: float = -math.inf  # ... until then
    raised_at: float = -math.inf
    paused_until: float = -math.inf
    paused: bool = False  # by load management, not resumed since: resuming needs the margin
    drawn_a: tuple[float, float, float] = (0.0, 0.0, 0.0)  # per phase, at the last reading
    low_since: float | None = None  # drawing well under its offer at every reading since then
    ceiling_a: float | None = None  # offered at most this (what it draws plus the margin) ...
    ceiling_at: float = -math.inf  # ... since then: until reoffer_interval_s later
    turn_since: float | None = None  # offered current since then (its turn), None: offered 0 ...
    waiting_since: float | None = None  # ... wanting current since then


@dataclass(frozen=True, slots=True)
class DlmState:
    shares: dict[str, Share] = field(default_factory=dict)  # connector -> Share; replaced, never mutated
    room_a: tuple[float, ...] | None = None  # for our EVs, from the last reading
    reading_at: float | None = None


@dataclass(frozen=True, slots=True)
class Offer:
    """A connector's site limit (0 or >= 6 A per phase), why, and when it may change by
    itself (None: only with a reading or a demand), and whether the core must open it now."""

    connector: str
    current_a: float
    reason: str
    until: float | None = None
    overcurrent: tuple[float, float] | None = None  # the core opens it now: (drawn A, offer A)


def room_a(cfg: SiteConfig, site_current_a: Sequence[float],
           own_current_a: Sequence[float]) -> tuple[float, ...]:
    """Per phase, A: breaker - (site - our EVs) - headroom; the room for all our EVs."""
    return tuple(cfg.breaker_a[p] - (site_current_a[p] - own_current_a[p]) - cfg.headroom_a
                 for p in range(PHASES))


def step(cfg: SiteConfig, state: DlmState, now: float, demands: Sequence[Demand],
         site_current_a: Sequence[float] | None = None) -> tuple[DlmState, tuple[Offer, ...]]:
    """One decision at `now` (monotonic s): with a site reading (A per phase, import
    positive; the demands' measured_a taken with it), or without one (a demand changed,
    a deadline came). Returns the new state and an Offer per demand."""
    shares = dict(state.shares)
    if site_current_a is not None:
        own = [sum(d.measured_a[p] for d in demands) for p in range(PHASES)]
        state = replace(state, room_a=room_a(cfg, site_current_a, own), reading_at=now)
        for name, sh in shares.items():  # gone: what it still draws is among the other loads
            shares[name] = replace(sh, drawn_a=(0.0, 0.0, 0.0))
    budget, silent = _budget(cfg, state, now)
    for d in demands:
        sh = replace(shares.get(d.connector, Share()), phases=d.phases)
        if site_current_a is not None:
            sh = _watch_draw(cfg, replace(sh, drawn_a=d.measured_a), now)
        if sh.ceiling_a is not None and now >= sh.ceiling_at + cfg.reoffer_interval_s:
            sh = replace(sh, ceiling_a=None, low_since=None)  # the fair share again: does it take more?
        shares[d.connector] = sh
    wanting = [d for d in demands if d.max_a >= MIN_CURRENT_A and not d.faulted]
    for d in demands:  # opened by the core: nothing to commit to
        if d.faulted:
            shares[d.connector] = replace(shares[d.connector], offer_a=0.0, committed_a=0.0,
                                          committed_until=min(now, shares[d.connector].committed_until))
    for name, sh in shares.items():  # gone or wanting nothing: offer 0, keep what is committed
        if name not in {d.connector for d in wanting} and sh.offer_a > 0:
            shares[name] = _lowered(cfg, sh, 0.0, now)
    ranked = sorted(wanting, key=_rank(cfg, shares, wanting, now))
    sharing = [_capped(d, shares[d.connector], wanting) for d in ranked
               if now >= shares[d.connector].paused_until]
    targets = _targets(cfg, _less_excess(budget, shares, wanting, state), sharing,
                       {n for n, sh in shares.items() if sh.paused})
    overdrawn = {} if site_current_a is None else _overdrawn(state, shares, demands, wanting, targets, now)
    reasons: dict[str, tuple[str, float | None]] = {
        d.connector: ("not asking for current", None) for d in demands if d not in wanting}
    for d in ranked:  # every lowering first, so raises see the room they leave
        sh, t = shares[d.connector], targets.get(d.connector, 0.0)
        if d.connector in overdrawn:  # the core opens it now: nothing committed beyond what it drew
            sh = replace(sh, offer_a=0.0, committed_a=0.0, committed_until=now, low_since=None,
                         ceiling_a=None)
            drawn_a, offer_a = overdrawn[d.connector]
            reasons[d.connector] = (f"opened: EV drew {drawn_a:.1f} A over its {offer_a:.1f} A "
                                    "offer past the grace", None)
        elif now < sh.paused_until:
            reasons[d.connector] = ("paused: under 6 A available", sh.paused_until)
        elif t < MIN_CURRENT_A:
            if sh.offer_a > 0:
                turn_over = _turn_over(cfg, sh, now)
                sh = replace(_lowered(cfg, sh, 0.0, now), paused_until=now + cfg.min_pause_s,
                             paused=not turn_over)  # after its turn: back at its next turn, no margin
                reasons[d.connector] = ("paused: its turn is over, another connector's begins" if turn_over
                                        else "paused: under 6 A available", sh.paused_until)
            elif over := _drawing_more(shares, d):
                reasons[d.connector] = (f"waiting for {over} to lower (as measured)", None)
            else:
                reasons[d.connector] = (f"waiting for room: {max(t, 0.0):.1f} A of 6 A", None)
        elif t < sh.offer_a:
            sh = _lowered(cfg, sh, t, now)
        shares[d.connector] = sh
    for d in ranked:
        if d.connector not in reasons:
            shares[d.connector], reasons[d.connector] = _raise(
                cfg, shares, d, targets[d.connector], budget, now, silent is not None)
    for d in demands:  # turns: since when each has been offered current, or waited for it
        sh = shares[d.connector]
        if sh.offer_a > 0:
            shares[d.connector] = replace(sh, waiting_since=None, turn_since=(
                sh.turn_since if sh.turn_since is not None else now))
        else:
            shares[d.connector] = replace(sh, turn_since=None, waiting_since=(
                None if d not in wanting else sh.waiting_since if sh.waiting_since is not None else now))
    offers = tuple(replace(_offer(d.connector, shares[d.connector], reasons.get(d.connector), silent, cfg),
                           overcurrent=overdrawn.get(d.connector)) for d in demands)
    return replace(state, shares=shares), offers


def next_deadline(cfg: SiteConfig, state: DlmState, now: float) -> float | None:
    """The next time (monotonic s) step() should run without a reading or a new demand."""
    times = [sh.paused_until for sh in state.shares.values()]
    times += [sh.committed_until for sh in state.shares.values()]
    times += [sh.raised_at + cfg.raise_interval_s for sh in state.shares.values()]
    times += [sh.ceiling_at + cfg.reoffer_interval_s for sh in state.shares.values()
              if sh.ceiling_a is not None]
    if cfg.rotate_s > 0 and any(sh.waiting_since is not None for sh in state.shares.values()):
        times += [sh.turn_since + cfg.rotate_s for sh in state.shares.values() if sh.turn_since is not None]
    if state.reading_at is not None:
        times.append(state.reading_at + cfg.meter_timeout_s)
    future = [t for t in times if t > now]
    return min(future) if future else None


def phases_in_use(measured_a: Sequence[float], threshold_a: float = PHASE_DRAWN_A) -> tuple[int, ...]:
    """The phases an EV draws on (more than threshold_a), all three when none does."""
    used = tuple(p for p in range(PHASES) if measured_a[p] > threshold_a)
    return used or tuple(range(PHASES))


def meter_silent(reading_at: float | None, now: float, timeout_s: float) -> bool:
    """The site meter's last good reading (monotonic s; None: none yet) is too old to use at
    `now`: load management falls back, solar assumes no surplus, status marks it stale."""
    return reading_at is None or now - reading_at >= timeout_s


def _budget(cfg: SiteConfig, state: DlmState, now: float) -> tuple[list[float], float | None]:
    """The room our EVs may use per phase, and since when the meter is silent (None: not)."""
    if state.room_a is None or meter_silent(state.reading_at, now, cfg.meter_timeout_s):
        since = state.reading_at if state.reading_at is not None else -math.inf
        return [min(cfg.fallback_a, max(0.0, b - cfg.headroom_a)) for b in cfg.breaker_a], since
    return [max(0.0, r) for r in state.room_a], None


def _watch_draw(cfg: SiteConfig, sh: Share, now: float) -> Share:
    """At a reading: the ceiling of an EV that draws less than it is offered, set, kept or
    lifted (the hysteresis between 2 x draw_margin_a under the offer and draw_margin_a / 2
    under the ceiling)."""
    if sh.offer_a <= 0:
        return replace(sh, low_since=None, ceiling_a=None)
    drawn = max(sh.drawn_a[p] for p in sh.phases)
    if sh.ceiling_a is not None:
        if drawn > sh.ceiling_a - cfg.draw_margin_a / 2:  # it takes what it has: may want more
            return replace(sh, ceiling_a=None, low_since=None)
        return sh
    settled = now >= max(sh.raised_at + cfg.grace_s, sh.committed_until)  # had time to take it
    if not settled or drawn > sh.offer_a - 2 * cfg.draw_margin_a + _EPS:
        return replace(sh, low_since=None)
    since = sh.low_since if sh.low_since is not None else now
    if now - since < max(cfg.grace_s, cfg.raise_interval_s):
        return replace(sh, low_since=since)
    return replace(sh, low_since=since, ceiling_at=now,
                   ceiling_a=max(MIN_CURRENT_A, _floor(drawn + cfg.draw_margin_a)))


def _rank(cfg: SiteConfig, shares: dict[str, Share], wanting: list[Demand],
          now: float) -> Callable[[Demand], tuple[int, int, float, str]]:
    """The order in which connectors get current: priority; then under "equal" (rotate_s > 0),
    while another of the same priority waits, those in their turn, the waiting (the longest
    first), and those whose turn is over (the longest last); else those offered current first;
    then connector id. _targets() takes current from the last-ranked first."""
    waiting = {d.priority for d in wanting if shares[d.connector].offer_a == 0
               and now >= shares[d.connector].paused_until}

    def key(d: Demand) -> tuple[int, int, float, str]:
        sh = shares[d.connector]
        if sh.offer_a == 0:
            since = sh.waiting_since if sh.waiting_since is not None else now
            return -d.priority, 1, since if d.priority in waiting else 0.0, d.connector
        if d.priority in waiting and _turn_over(cfg, sh, now) and sh.turn_since is not None:
            return -d.priority, 2, -sh.turn_since, d.connector  # the longest turn gives way first
        return -d.priority, 0, 0.0, d.connector
    return key


def _turn_over(cfg: SiteConfig, sh: Share, now: float) -> bool:
    return (cfg.share == "equal" and cfg.rotate_s > 0 and sh.turn_since is not None
            and now >= sh.turn_since + cfg.rotate_s)


def _capped(d: Demand, sh: Share, wanting: list[Demand]) -> Demand:
    """d under its ceiling, when another connector shares a phase with it (alone, the room it
    leaves would go to no one, and its offer stays as it was)."""
    if sh.ceiling_a is None or not any(set(o.phases) & set(d.phases) for o in wanting if o is not d):
        return d
    return replace(d, max_a=min(d.max_a, sh.ceiling_a))


def _less_excess(budget: list[float], shares: dict[str, Share], wanting: list[Demand],
                 state: DlmState) -> list[float]:
    """The budget less what EVs drew beyond what they were allowed at the last reading (their
    offer, or a lowered one's old offer in its grace): the offers together leave room for it."""
    out = list(budget)
    for d in wanting:
        sh = shares[d.connector]
        if sh.offer_a > 0 and state.reading_at is not None:
            allowed = max(sh.offer_a, sh.committed_a if state.reading_at < sh.committed_until else 0.0)
            for p in sh.phases:
                out[p] -= max(0.0, sh.drawn_a[p] - allowed)
    return [max(0.0, a) for a in out]


def _targets(cfg: SiteConfig, budget: list[float], ranked: list[Demand],
             paused: Collection[str] = ()) -> dict[str, float]:
    """Each sharing connector's target (A, floored to 0.1), before the time rules."""
    if cfg.share == "priority":
        left, out = list(budget), {d.connector: 0.0 for d in ranked}
        if cfg.min_first:  # 6 A each (a paused one: what it resumes at), in rank order while the
            for d in ranked:  # room lasts; then the rest by rank
                least = min(d.max_a, MIN_CURRENT_A + (cfg.resume_margin_a if d.connector in paused else 0.0))
                if all(left[p] >= least for p in d.phases):
                    out[d.connector] = least
                    for p in d.phases:
                        left[p] -= least
        for d in ranked:
            more = max(0.0, min(d.max_a - out[d.connector], *(left[p] for p in d.phases)))
            if out[d.connector] == 0 and more < MIN_CURRENT_A:
                continue
            out[d.connector] += more
            for p in d.phases:
                left[p] -= more
        return {k: _floor(v) for k, v in out.items()}
    ranked = list(ranked)
    while True:
        out = _fill(budget, ranked)
        short = [d for d in ranked if _floor(out[d.connector]) < MIN_CURRENT_A]
        if not short:
            return {k: _floor(v) for k, v in out.items()}
        ranked.remove(short[-1])  # the lowest-ranked of those under 6 A gives way


def _fill(budget: list[float], demands: list[Demand]) -> dict[str, float]:
    """Max-min fair water-filling: raise everyone alike until a phase or their max stops them."""
    out = {d.connector: 0.0 for d in demands}
    left, rising = list(budget), list(demands)
    while rising:
        users = [sum(1 for d in rising if p in d.phases) for p in range(PHASES)]
        inc = min([d.max_a - out[d.connector] for d in rising]
                  + [left[p] / users[p] for p in range(PHASES) if users[p]])
        inc = max(0.0, inc)
        for d in rising:
            out[d.connector] += inc
            for p in d.phases:
                left[p] -= inc
        rising = [d for d in rising if out[d.connector] < d.max_a - _EPS
                  and all(left[p] > _EPS for p in d.phases)]
    return out


def _lowered(cfg: SiteConfig, sh: Share, new_a: float, now: float) -> Share:
    """sh lowered to new_a now: its EV may draw the old offer for the grace (stop_grace_s
    when stopping it) more."""
    held = sh.committed_a if now < sh.committed_until else 0.0
    grace = cfg.stop_grace_s if new_a == 0 else cfg.grace_s
    return replace(sh, offer_a=new_a, committed_a=max(held, sh.offer_a),
                   committed_until=max(sh.committed_until, now + grace))


def _raise(cfg: SiteConfig, shares: dict[str, Share], d: Demand, target: float, budget: list[float],
           now: float, silent: bool) -> tuple[Share, tuple[str, float | None]]:
    """The time rules for a start or a raise: (the connector's Share, (reason, until))."""
    sh = shares[d.connector]
    if target <= sh.offer_a:
        return sh, ("", None)
    if silent:  # the fallback is a ceiling, not room known to be free: only a reading shows that
        return sh, (f"no raise without a reading (offer {sh.offer_a:.1f} A)", None)
    starting = sh.offer_a == 0
    if sh.paused and target < min(d.max_a, MIN_CURRENT_A + cfg.resume_margin_a):
        return sh, (f"waiting for room: {target:.1f} A of "
                    f"{MIN_CURRENT_A + cfg.resume_margin_a:g} A to resume", None)
    if not starting:
        if now < sh.raised_at + cfg.raise_interval_s:
            return sh, ("raise held", sh.raised_at + cfg.raise_interval_s)
        if target - sh.offer_a < cfg.raise_step_a and target < d.max_a:
            return sh, ("", None)
    fits, busy = True, []
    for p in d.phases:  # what the others may be drawing on my phases: offered, lowered or measured
        others = [(n, o) for n, o in shares.items() if n != d.connector]
        if sum(_held(o, p, now) for _, o in others) + target > budget[p] + _EPS:
            fits = False
            busy += [(n, o.committed_until) for n, o in others
                     if p in o.phases and now < o.committed_until]
    if fits:
        return replace(sh, offer_a=target, raised_at=now, paused=False), ("", None)
    if busy:
        names = ", ".join(sorted({n for n, _ in busy}))
        return sh, (f"waiting for {names} to lower", max(t for _, t in busy))
    if over := _drawing_more(shares, d):  # lowered for their grace, a reading shows them drawing more
        return sh, (f"waiting for {over} to lower (as measured)", None)
    return sh, ("waiting for room", None)


def _overdrawn(state: DlmState, shares: dict[str, Share], demands: Sequence[Demand],
               wanting: list[Demand], targets: dict[str, float],
               now: float) -> dict[str, tuple[float, float]]:
    """At a reading: the EVs that draw more than they may (beyond the PWM's resolution: their
    offer, or in the grace of a lowering the old offer) on a phase where that room is needed:
    the site is over its budget there, or another connector there is offered less than its
    target. name -> (the most it drew on such a phase, what it may draw), A. IEC 61851-1: an EV
    follows a lower PWM within 5 s."""
    own = [sum(d.measured_a[p] for d in demands) for p in range(PHASES)]
    room = state.room_a if state.room_a is not None else (math.inf,) * PHASES
    out: dict[str, tuple[float, float]] = {}
    for d in wanting:
        sh = shares[d.connector]
        if sh.offer_a <= 0:
            continue
        allowed = max(sh.offer_a, sh.committed_a if now < sh.committed_until else 0.0)
        needed = [p for p in range(PHASES) if sh.drawn_a[p] > allowed + MAX_ABOVE_A and (
            own[p] > room[p] + _EPS or any(
                p in o.phases and targets.get(o.connector, 0.0) > shares[o.connector].offer_a + _EPS
                for o in wanting if o is not d))]
        if needed:
            out[d.connector] = (max(sh.drawn_a[p] for p in needed), allowed)
    return out


def _drawing_more(shares: dict[str, Share], d: Demand) -> str:
    """The others that drew more than their offers on d's phases at the last reading (names)."""
    return ", ".join(sorted(n for n, o in shares.items() if n != d.connector
                            and any(o.drawn_a[p] > o.offer_a + _EPS for p in d.phases)))


def _held(sh: Share, p: int, now: float) -> float:
    """What an EV may be drawing on phase p (A): its offer, its old offer for the grace after a
    lowering, and what the last reading showed, the most of them."""
    offered = max(sh.offer_a, sh.committed_a if now < sh.committed_until else 0.0) if p in sh.phases else 0.0
    return max(offered, sh.drawn_a[p])


def _offer(name: str, sh: Share, why: tuple[str, float | None] | None, silent: float | None,
           cfg: SiteConfig) -> Offer:
    reason, until = why if why is not None else ("", None)
    if not reason and sh.ceiling_a is not None and sh.offer_a == sh.ceiling_a:
        drawn = max(sh.drawn_a[p] for p in sh.phases)
        reason, until = (f"drawing {drawn:.1f} A: offered {sh.offer_a:.1f} A until its share is "
                         "offered again", sh.ceiling_at + cfg.reoffer_interval_s)
    reason = reason or f"site share {sh.offer_a:.1f} A"
    if silent is not None:
        reason = f"site meter silent: fallback budget; {reason}"
    return Offer(name, sh.offer_a, reason, until)


def _floor(current_a: float) -> float:
    return math.floor(current_a * 10 + 1e-6) / 10


# --- solar surplus ---------------------------------------------------------------------

class Mode(str, enum.Enum):
    FAST = "fast"  # ignore the surplus: the chain's limit
    SOLAR = "solar"  # export only (plus grid_allowance_a)
    MIN_SOLAR = "min+solar"  # 6 A always, more when the surplus allows


@dataclass(frozen=True, slots=True)
class SolarConfig:
    voltage_v: float = 230.0
    start_delay_s: float = 60.0  # the surplus must cover 6 A this long to start
    stop_delay_s: float = 300.0  # short this long (at 6 A meanwhile) to stop
    grid_allowance_a: float = 0.0  # "solar" may also import this much per phase


@dataclass(frozen=True, slots=True)
class SolarState:
    charging: bool = False
    covered_since: float | None = None
    short_since: float | None = None


@dataclass(frozen=True, slots=True)
class SolarOffer:
    """The solar limit in A per phase (None: none, fast mode; 0: not now), why, and when
    it changes by itself (the shell may re-run solar_step then)."""

    current_a: float | None
    reason: str
    until: float | None = None


def surplus_a(cfg: SolarConfig, grid_power_w: float, own_power_w: float, phases: int) -> float:
    """The current per phase the EV could draw from export alone: what it draws now plus
    what goes to the grid (grid_power_w: import positive, export negative)."""
    return (own_power_w - grid_power_w) / (cfg.voltage_v * phases)


def solar_silent(mode: Mode) -> SolarOffer:
    """The solar limit while the site meter is silent (loadmgmt.meter_silent): no surplus is
    known, so none is assumed: "solar" pauses, "min+solar" keeps its 6 A."""
    if mode is Mode.FAST:
        return SolarOffer(None, "fast mode")
    if mode is Mode.MIN_SOLAR:
        return SolarOffer(MIN_CURRENT_A, "min+solar: site meter silent, no surplus known")
    return SolarOffer(0.0, "site meter silent: no surplus known")


def solar_step(cfg: SolarConfig, state: SolarState, now: float, mode: Mode,
               grid_power_w: float, own_power_w: float,
               phases: int) -> tuple[SolarState, SolarOffer]:
    """One reading of the site meter (total W) and of this connector (W) at `now` (s)."""
    if mode is Mode.FAST:
        return SolarState(), SolarOffer(None, "fast mode")
    surplus = surplus_a(cfg, grid_power_w, own_power_w, phases)
    if mode is Mode.MIN_SOLAR:
        return SolarState(), SolarOffer(max(MIN_CURRENT_A, _floor(surplus)),
                                        f"min+solar: surplus {surplus:.1f} A")
    avail = surplus + cfg.grid_allowance_a
    if avail >= MIN_CURRENT_A:
        if not state.charging:
            since = state.covered_since if state.covered_since is not None else now
            if now < since + cfg.start_delay_s:
                return (SolarState(False, since), SolarOffer(
                    0.0, f"surplus {avail:.1f} A: starting", since + cfg.start_delay_s))
        return SolarState(True), SolarOffer(_floor(avail), f"following surplus {avail:.1f} A")
    if not state.charging:
        return SolarState(), SolarOffer(0.0, f"waiting for surplus: {avail:.1f} A of 6 A")
    since = state.short_since if state.short_since is not None else now
    if now < since + cfg.stop_delay_s:
        return (SolarState(True, None, since), SolarOffer(
            MIN_CURRENT_A, f"surplus short ({avail:.1f} A): 6 A meanwhile",
            since + cfg.stop_delay_s))
    return SolarState(), SolarOffer(0.0, f"surplus short for {cfg.stop_delay_s:g} s: stopped")


@dataclass(frozen=True, slots=True)
class SurplusShare:
    """Energy in Wh: what the EV took, how much of it was surplus, and the most surplus
    it could have taken (min..max power, same total); the two shares of ev_energy_wh."""

    ev_energy_wh: int
    from_surplus_wh: int
    ideal_from_surplus_wh: int
    share: float
    ideal_share: float


def surplus_share(interval_s: float, pv_w: Sequence[float], house_w: Sequence[float],
                  ev_w: Sequence[float], ev_min_w: float, ev_max_w: float) -> SurplusShare:
    """For a bench: equal-length power profiles (W, one value per interval_s) of PV
    production, house load and EV charging; surplus = PV beyond the house load."""
    surplus = [max(0.0, pv - house) for pv, house in zip(pv_w, house_w, strict=True)]
    ev_j = sum(ev_w) * interval_s
    used_j = sum(min(ev, s) for ev, s in zip(ev_w, surplus, strict=True)) * interval_s
    ideal_j = min(ev_j, sum(min(s, ev_max_w) for s in surplus if s >= ev_min_w) * interval_s)
    share = used_j / ev_j if ev_j > 0 else 0.0
    ideal = ideal_j / ev_j if ev_j > 0 else 0.0
    return SurplusShare(round(ev_j / 3600), round(used_j / 3600), round(ideal_j / 3600),
                        share, ideal)
