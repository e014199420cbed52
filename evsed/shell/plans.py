"""The `plan` limit source: each connector's charging plan, the plans waiting for a card's next
session, and the dynamic price curve; what evsed.core.plan decides, fed to the limit chain.

A session with a plan charges at first until its EV's draw is settled (PROBE_S at most): the
phases and the power the EV takes, which no limit says. Then, outside its slots, the plan holds
the EV paused (the limit 0 A: PWM off, session kept), as a window does; planned again when
another source's limit, the EV's draw or the prices change, at each slot's edge and every
REPLAN_S. A plan ends with its session (not with one a restart or a power cut ended: it waits
for the connector's next one) or at its departure.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from fractions import Fraction
from typing import TYPE_CHECKING, Any, cast

import structlog

from evsed import protocol as p
from evsed.core import limits as lm
from evsed.core import plan as planner
from evsed.core import prices
from evsed.shell.bus import ChargerEvent
from evsed.shell.planfile import MAX_CARD_PLANS, MemoryFile, Plan, PlanFile, Saved, load

if TYPE_CHECKING:
    from evsed.shell.charger import Charger
    from evsed.shell.connector import ConnectorControl

log = structlog.get_logger("evsed")
SOURCE = "plan"
REPLAN_S = 300  # at least this often while a plan runs: energy from solar, a draw that drifts
DRAW_SETTLE_S = 60.0  # after the contactor closes or the offer changes, the EV's draw counts after this
PROBE_S = 180.0  # a new session charges at first until its EV's draw is known, at most this long
DRAW_CHANGE = 0.1  # a draw this much off the one planned with: plan again
EV_LIMITED = 0.9  # an EV drawing under this share of the offered current draws what it can take
MAX_AHEAD_S = 7 * 86_400  # a departure at most a week ahead
SOLAR_MODES = ("solar", "min+solar")
ENDS_NOT_THE_PLAN = ("reboot", "power_loss")  # the session ended, the EV may still be there: wait


class PlanError(ValueError):
    """A plan that cannot be set; the message says why."""


class Plans:
    def __init__(self, charger: Charger, file: PlanFile | None = None):
        self.charger = charger
        self.file = file if file is not None else MemoryFile()
        saved = load(self.file, charger.wallclock())
        self.plans: dict[int, Plan] = {plan.connector: plan for plan in saved.plans
                                       if plan.connector in charger.connectors}
        self.cards: dict[str, Plan] = {plan.id_tag: plan for plan in saved.cards if plan.id_tag}
        self.curve = saved.curve
        self.decisions: dict[int, planner.Decision] = {}
        self.ev_w: dict[int, float] = {}  # the EV's settled draw in this session, W
        self.planned_ev_w: dict[int, float | None] = {}  # the draw the last plan was made with
        self.planned_w: dict[int, float] = {}  # the power it was made with
        self.site_a: dict[int, float] = {}  # the site's share while the plan let the EV charge, A
        self.probe_until: dict[int, float] = {}  # monotonic s: a new session's EV charges until its draw is known
        self._failed: dict[int, str] = {}  # connector -> the error its plan failed with, said once
        self._kept: dict[int, tuple[Any, ...]] = {}  # connector -> (config, curve, key, its prices, its caps)
        self._busy = self._again = False
        self._recover()

    @property
    def tz(self) -> dt.tzinfo:
        return self.charger.tz

    def _now_s(self) -> int:
        return int(self.charger.wallclock().timestamp())

    def _recover(self) -> None:
        """A plan bound to a session that no longer runs (a power cut closed it at the next start):
        its energy counts, and the plan waits for the connector's next session."""
        for cid, plan in list(self.plans.items()):
            if plan.session is None:
                continue
            row = self.charger.recorder.writer.store.session(plan.session)
            energy = int(row["energy_wh"] or 0) if row is not None else 0
            delivered = plan.delivered_wh + max(0, energy - plan.baseline_wh)
            self.plans[cid] = replace(plan, session=None, delivered_wh=delivered, baseline_wh=0)
            log.info("plan.session_lost", connector=cid, session=plan.session, delivered_wh=delivered)

    # --- setting ----------------------------------------------------------------------------
    def set(self, plan: Plan) -> Plan:
        """A plan for a connector (bound at once to its running session) or a card's next session."""
        now = self._now_s()
        if not now < plan.departure_s <= now + MAX_AHEAD_S:
            raise PlanError("the departure must be in the coming 7 days")
        if plan.connector is None:
            assert plan.id_tag is not None
            if plan.id_tag not in self.cards and len(self.cards) >= MAX_CARD_PLANS:
                raise PlanError(f"{MAX_CARD_PLANS} cards have a plan waiting already")
            self.cards[plan.id_tag] = plan
        else:
            ctrl = self.charger.connector(plan.connector)
            session = ctrl.session
            if session is None or session.row_id is None:
                self.plans[ctrl.id] = plan
            else:
                self.plans[ctrl.id] = plan.bound(ctrl.id, session.row_id, session.energy_wh)
                if ctrl.id not in self.ev_w:
                    self.probe_until[ctrl.id] = self.charger.clock() + PROBE_S
        log.info("plan.set", **{k: v for k, v in plan.to_json().items() if v is not None})
        self._changed()
        return plan

    def cancel(self, connector: int | None, id_tag: str | None) -> bool:
        gone = self.cards.pop(id_tag, None) if id_tag is not None else self.plans.pop(
            self.charger.connector(connector).id, None)
        if gone is not None:
            log.info("plan.cancelled", connector=connector, id_tag=id_tag)
            self._changed()
        return gone is not None

    def set_prices(self, curve: prices.Curve) -> None:
        self.curve = curve
        log.info("plan.prices", source=curve.source, entries=len(curve.spans),
                 start=prices._iso(curve.start_s), end=prices._iso(curve.end_s))
        self._changed()

    def _changed(self) -> None:
        self.save()
        self.refresh()

    def save(self) -> None:
        data = Saved(tuple(self.plans.values()), tuple(self.cards.values()), self.curve).encode()
        file = self.file

        def write(store: Any) -> None:
            try:
                file.write(data)
            except OSError as exc:  # logged and survived: the plans stay in force until a restart
                log.error("plans.write_failed", error=str(exc))
        self.charger.recorder.writer.submit(write)

    # --- the bus ----------------------------------------------------------------------------
    def event(self, e: ChargerEvent) -> None:
        kind, cid = e.type, e.connector
        if kind == "session.started":
            self._bind(cid, e.data)
        elif kind == "session.stopped":
            self._session_ended(cid, e.data)
        elif kind == "limit.changed" and e.data.get("source") != SOURCE and self._power_moved():
            self.refresh()
        elif kind == "session.sample":
            self._sampled(cid, e.data)
        elif kind in ("config.reloaded", "mode.changed"):
            self.refresh()

    def _power_moved(self) -> bool:
        """Whether a plan's power moved (another source's limit changed it): plan again. A limit
        that changes no plan's power (another connector's share, a source above the binding one)
        costs no planning."""
        return any(abs(self._power(self.charger.connectors[cid])[0] - used) > 0.01 * max(used, 1.0)
                   for cid, used in self.planned_w.items() if cid in self.decisions)

    def _bind(self, cid: int, data: dict[str, Any]) -> None:
        session = data.get("session")
        if not isinstance(session, int) or cid not in self.charger.connectors:
            return
        self.ev_w.pop(cid, None)
        self.site_a.pop(cid, None)
        self.probe_until[cid] = self.charger.clock() + PROBE_S
        plan = self.plans.get(cid)
        tag = data.get("id_tag")
        if plan is None and isinstance(tag, str) and tag in self.cards:
            plan = self.cards.pop(tag)
        if plan is None:
            plan = self._group_plan(str(data.get("group") or ""), tag)
        if plan is None:
            return
        self.plans[cid] = plan.bound(cid, session, 0)
        log.info("plan.bound", connector=cid, session=session, energy_wh=plan.energy_wh, origin=plan.origin)
        self._changed()

    def _group_plan(self, group: str, id_tag: Any) -> Plan | None:
        gp = self.charger.config.policy.group(group).plan if group else None
        if gp is None:
            return None
        by = planner.next_departure(gp.by_min, gp.days, self.charger.wallclock(), self.tz)
        if by is None:
            return None
        return Plan(gp.energy_wh, int(by.timestamp()), "group", id_tag=id_tag if isinstance(id_tag, str) else None)

    def _session_ended(self, cid: int, data: dict[str, Any]) -> None:
        plan = self.plans.get(cid)
        if plan is None or plan.session is None or plan.session != data.get("session"):
            return
        if data.get("reason") in ENDS_NOT_THE_PLAN:
            energy = data["energy_wh"] if isinstance(data.get("energy_wh"), int) else 0
            self.plans[cid] = replace(plan, session=None, baseline_wh=0,
                                      delivered_wh=plan.delivered_wh + max(0, energy - plan.baseline_wh))
        else:
            del self.plans[cid]
            log.info("plan.ended", connector=cid, reason="session ended")
        self._changed()

    def _sampled(self, cid: int, data: dict[str, Any]) -> None:
        """A meter sample: the EV's own draw, once settled under an offer it takes less of (an EV
        that takes all it is offered says nothing of its own limit: the chain's offer binds), and
        whether the energy is in."""
        ctrl = self.charger.connectors.get(cid)
        d = self.decisions.get(cid)
        if ctrl is None or d is None:
            return
        st = ctrl.state
        settled = ctrl.clock() - max(st.offered_changed_at, st.contactor_changed_at) >= DRAW_SETTLE_S
        power, current = data.get("power_w"), data.get("current_a")
        if st.contactor_closed and settled and isinstance(power, (int, float)) and isinstance(current, list) \
                and current and all(isinstance(a, (int, float)) for a in current):
            own = float(power) if max(current) < EV_LIMITED * st.offered_a else None
            if own is None:
                self.ev_w.pop(cid, None)
            else:
                self.ev_w[cid] = own
            used = self.planned_ev_w.get(cid)
            if self.probe_until.pop(cid, None) is not None or (own is None) != (used is None) or (
                    own is not None and used is not None and abs(own - used) > DRAW_CHANGE * used):
                self.refresh()
                return
        plan = self.plans.get(cid)
        if plan is not None and d.state not in ("done", "infeasible") and self._delivered(ctrl, plan) >= plan.energy_wh:
            self.refresh()

    # --- deciding ---------------------------------------------------------------------------
    def refresh(self) -> None:
        """Decide every connector's plan now; re-entrant calls (a limit it sends) fold in."""
        if self._busy:
            self._again = True
            return
        self._busy = True
        try:
            self._decide_all()
            while self._again:
                self._again = False
                self._decide_all()
        finally:
            self._busy = False

    def _decide_all(self) -> None:
        now = self._now_s()
        cards = [tag for tag, plan in self.cards.items() if plan.departure_s <= now]
        plans = [cid for cid, plan in self.plans.items() if plan.departure_s <= now]
        for tag in cards:
            del self.cards[tag]
            log.info("plan.ended", id_tag=tag, reason="departure")
        for cid in plans:
            del self.plans[cid]
            log.info("plan.ended", connector=cid, reason="departure")
        if cards or plans:
            self.save()
        wake: list[int] = [plan.departure_s for plan in self.cards.values()]
        for cid, ctrl in self.charger.connectors.items():
            try:
                d = self._decide(ctrl, now)
            except Exception as exc:  # noqa: BLE001 - a plan that cannot be made holds nothing: the rest charges
                if self._failed.get(cid) != repr(exc):
                    log.error("plan.failed", connector=cid, error=repr(exc))
                self._failed[cid], d = repr(exc), None
            else:
                self._failed.pop(cid, None)
            before = self.decisions.get(cid)
            if d is None:
                self.decisions.pop(cid, None)
            else:
                self.decisions[cid] = d
                wake += [t for t in (d.next_s, now + REPLAN_S) if t is not None]
            self.charger.policy.send(ctrl, self.limit(ctrl))
            if (before and (before.state, before.reason)) != (d and (d.state, d.reason)):
                ctrl.publish("plan.changed", **self.changed_event(ctrl))
        wake += [plan.departure_s for cid, plan in self.plans.items() if plan.session is None]
        timers = self.charger.policy.timers
        if timers is not None:
            when = min(wake, default=None)
            timers.set("plan", None if when is None else dt.datetime.fromtimestamp(when, dt.timezone.utc),
                       self.refresh)

    def _decide(self, ctrl: ConnectorControl, now: int) -> planner.Decision | None:
        plan = self.plans.get(ctrl.id)
        session = ctrl.session
        if plan is None or plan.session is None or session is None or session.row_id != plan.session:
            return None
        power, w_per_a = self._power(ctrl)
        self.planned_ev_w[ctrl.id], self.planned_w[ctrl.id] = self.ev_w.get(ctrl.id), power
        curve, caps_a = self._hours(ctrl, now, plan.departure_s)
        segs = planner.segments(curve, now, plan.departure_s, power, caps=[(a, b, c * w_per_a) for a, b, c in caps_a])
        d = planner.decide(plan.energy_wh, self._delivered(ctrl, plan), plan.departure_s, now, segs, self.tz)
        probe_left = self.probe_until.get(ctrl.id, -1.0) - self.charger.clock()
        if probe_left <= 0:
            self.probe_until.pop(ctrl.id, None)
        elif d.state == "waiting":
            return replace(d, state="measuring", next_s=now + int(probe_left) + 1,
                           reason="plan: measuring the EV's draw first")
        return d

    @staticmethod
    def _delivered(ctrl: ConnectorControl, plan: Plan) -> int:
        energy = ctrl.session.energy_wh if ctrl.session is not None else 0
        return plan.delivered_wh + max(0, energy - plan.baseline_wh)

    def _power(self, ctrl: ConnectorControl) -> tuple[float, float]:
        """The power the plan can count on now (W): what every other source allows, the EV's settled
        draw; and W per A (the phases the EV draws on), for the windows' caps."""
        held = (d := self.decisions.get(ctrl.id)) is not None and d.holds
        amps = [ctrl.cfg.max_current_a]
        for source, a in ctrl.chain().ceilings().items():
            if source in (SOURCE, "window", "solar"):
                continue  # the plan's own, the windows by the hour, the grid stands in for the sun
            if source == "site" and held:  # paused by the plan, the EV takes no share: the last it had
                a = self.site_a.get(ctrl.id, ctrl.cfg.max_current_a)
            elif source == "site":
                self.site_a[ctrl.id] = a
            amps.append(a)
        w_per_a = len(self.charger.policy._phases(ctrl)) * self.charger.config.charger.voltage_v
        power = min(amps) * w_per_a
        return (min(power, self.ev_w[ctrl.id]) if ctrl.id in self.ev_w else power), w_per_a

    def _hours(self, ctrl: ConnectorControl, now: int, end: int) -> tuple[list[prices.Span], list[tuple[int, int, float]]]:
        """The plan's prices and the windows' caps (A) from now to its departure. They hold for times,
        not for now: made once, again when the config, the prices, the group or the clock's sync change."""
        policy = self.charger.policy
        config, group = self.charger.config, policy.group_of(ctrl)
        key = (group, end, policy.synced)
        kept = self._kept.get(ctrl.id)
        if kept is None or kept[0] is not config or kept[1] is not self.curve or kept[2] != key:
            curve = [(a, b, Fraction(price)) for a, b, price in self.curve_for(ctrl, now, end)]
            caps = planner.window_caps(config.policy.schedule, group or None, now, end, policy.synced)
            kept = self._kept[ctrl.id] = (config, self.curve, key, curve, caps)
        return kept[3], kept[4]


    def curve_for(self, ctrl: ConnectorControl | None, start: int, end: int) -> list[prices.Span]:
        """The prices a plan (of ctrl's group) uses over [start, end) (evsed.core.plan.plan_curve)."""
        group = self.charger.policy.group_of(ctrl) if ctrl is not None else ""
        return planner.plan_curve(self.charger.config.tariff, group, self.charger.config.charger.timezone,
                                  self.curve, start, end)

    def _solar_mode(self, ctrl: ConnectorControl) -> bool:
        return self.charger.policy.mode_of(ctrl).value in SOLAR_MODES

    def lifts_solar(self, ctrl: ConnectorControl) -> bool:
        """In the solar modes the sun charges whenever it can (counted toward the plan) and the
        plan's slots charge from the grid: the solar source steps aside in them."""
        d = self.decisions.get(ctrl.id)
        return d is not None and d.state in ("charging", "infeasible") and self._solar_mode(ctrl)

    # --- what status shows (evsed.shell.plan_commands builds the records) ---------------------
    def limit(self, ctrl: ConnectorControl) -> lm.Limit:
        d = self.decisions.get(ctrl.id)
        if d is None:
            return lm.plan(False, "")
        return lm.plan(d.holds and not self._solar_mode(ctrl), d.reason)

    def delivered(self, ctrl: ConnectorControl, plan: Plan) -> int:
        """What the plan has had so far, Wh: its sessions' energy since it bound to them."""
        return self._delivered(ctrl, plan) if plan.session is not None else plan.delivered_wh

    def price_source(self, until_s: int) -> str:
        """Where the prices to until_s come from: the dynamic curve's source, tariff, or none."""
        curve = self.curve
        if curve is not None and curve.end_s > self._now_s() and curve.start_s < until_s:
            return curve.source
        return "tariff" if self.charger.config.tariff is not None else "none"

    def now(self, ctrl: ConnectorControl, slots: int = p.SLOTS_SHOWN) -> p.PlanNow | None:
        """The connector's plan as status, MQTT and the page show it, with its first `slots` slots
        (None: it has none)."""
        plan = self.plans.get(ctrl.id)
        if plan is None:
            return None
        by, origin, delivered = _iso(plan.departure_s, self.tz), cast(p.Origin, plan.origin), self.delivered(ctrl, plan)
        d = self.decisions.get(ctrl.id)
        if d is None:
            failed = ctrl.id in self._failed
            return p.PlanNow(energy_wh=plan.energy_wh, by=by, origin=origin, delivered_wh=delivered,
                             state="infeasible" if failed else "pending",
                             reason="plan: could not be made (the log says why): charging as fast as allowed" if failed
                             else "plan: waiting for the next session")
        tariff, sched = self.charger.config.tariff, d.schedule
        shown = tuple(p.PlanSlot(start=_iso(s.start_s, self.tz), end=_iso(s.end_s, self.tz),
                                 power_w=round(float(s.power_w)), price=float(s.price))
                      for s in sched.slots[:slots])
        finish = _iso(sched.finish_s, self.tz) if sched.finish_s is not None and d.state != "done" else None
        return p.PlanNow(energy_wh=plan.energy_wh, by=by, origin=origin, delivered_wh=delivered,
                         state=cast(p.PlanState, d.state), reason=d.reason, slots=shown, finish=finish,
                         cost=round(float(sched.cost), 4), currency=tariff.currency if tariff is not None else "",
                         shortfall_wh=round(float(sched.shortfall_wh)),
                         prices=cast(Any, self.price_source(plan.departure_s)))

    def waiting(self) -> tuple[p.WaitingPlan, ...]:
        """The plans waiting for a card's next session."""
        return tuple(p.WaitingPlan(energy_wh=plan.energy_wh, by=_iso(plan.departure_s, self.tz),
                                   origin=cast(p.Origin, plan.origin), id_tag=plan.id_tag or "")
                     for plan in self.cards.values())

    def changed_event(self, ctrl: ConnectorControl) -> dict[str, Any]:
        """plan.changed's fields: what the plan does now and why, its finish and cost."""
        now = self.now(ctrl)
        if now is None:
            return {"state": "none"}
        return {"state": now.state, "reason": now.reason, "energy_wh": now.energy_wh,
                "delivered_wh": now.delivered_wh, "by": now.by, "finish": now.finish, "cost": now.cost,
                "currency": now.currency or None}


def _iso(t: int, tz: dt.tzinfo = dt.timezone.utc) -> str:
    return dt.datetime.fromtimestamp(t, tz).isoformat()
