"""What each command of the control socket does to the charger: one handler per protocol record.

The control host and the scenario runner both call run(); the records (evsed.protocol) have
checked every field's type and bounds already, so a handler sees only valid values.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, cast

from evsed import protocol as p
from evsed.config.policy import NEEDS_SITE_METER
from evsed.core import events as ev
from evsed.core.state import remote_start_refusal, reservation_answer
from evsed.shell.sources import ocpp as ocpp_source
from hal import canonical_uid

if TYPE_CHECKING:
    from evsed.shell.charger import Charger

STOP_REASONS = {"remote": ev.StopReason.REMOTE, "deauthorized": ev.StopReason.DEAUTHORIZED,
                "local": ev.StopReason.LOCAL, "other": ev.StopReason.OTHER}
LEARNED_VALID_S = 600.0  # a card tapped for learn may be added this long after the tap
MAX_COMMAND_SOURCES = 8  # limit sources set by commands: each is a ceiling every status reply carries


class CommandError(ValueError):
    """A request the charger cannot take; the message says why."""


def id_tag(text: str) -> str:
    """A card UID written with separators or in lower case as the reader reads it; other id tags as they are."""
    if re.fullmatch(r"[0-9A-Fa-f:\- ]+", text):
        try:
            return canonical_uid(text)
        except ValueError:
            pass
    return text


Handler = Callable[["Charger", Any], p.Reply]


def run(charger: Charger, command: p.Command[Any]) -> p.Reply:
    """Run one command on the charger; raises CommandError when it cannot be done now."""
    handler = HANDLERS.get(type(command))
    if handler is None:
        raise CommandError(f"{command.LABEL}: not a command of the charger")
    why = unsimulated(charger, command)
    if why is not None:
        raise CommandError(why)
    try:
        return handler(charger, command)
    except ValueError as exc:  # a connector that does not exist, a simulator setting it lacks
        if isinstance(exc, CommandError):
            raise
        raise CommandError(f"{command.LABEL}: {exc}") from None


CONNECTOR_SIM = (p.Plug, p.Unplug, p.SetEv, p.InjectFault, p.ClearFault, p.SetPilot, p.SetCable)  # the EV at a pilot


def unsimulated(charger: Charger, command: p.Command[Any]) -> str | None:
    """Why a `sim` action cannot drive this daemon's hardware (None: it can, or it is no `sim`): a
    simulator config only, and the EV's actions only at a simulated pilot, a tap only on a simulated
    reader; on real hardware they would answer ok and change nothing."""
    if command.CMD != "sim":
        return None
    if charger.world is None:
        return "this daemon runs no simulated hardware"
    if isinstance(command, CONNECTOR_SIM):
        cid = command.connector or charger.config.connectors[0].id
        conn = next((c for c in charger.config.connectors if c.id == cid), None)  # None: the handler says so
        if conn is not None and conn.pilot.backend != "sim":
            return f"connector {conn.id}'s pilot is real hardware ({conn.pilot.backend}), not the simulator's"
    if isinstance(command, p.Tap) and charger.config.rfid is not None and charger.config.rfid.backend != "sim":
        return f"the card reader is real hardware ({charger.config.rfid.backend}), not the simulator's"
    return None


# --- the commands ------------------------------------------------------------------------------

def _sim_connector(charger: Charger, connector: int | None) -> Any:
    return charger.world.connector(charger.connector(connector).id)


def _plug(charger: Charger, cmd: p.Plug) -> p.Ok:
    _sim_connector(charger, cmd.connector).plug()
    return p.Ok()


def _unplug(charger: Charger, cmd: p.Unplug) -> p.Ok:
    _sim_connector(charger, cmd.connector).unplug()
    return p.Ok()


def _tap(charger: Charger, cmd: p.Tap) -> p.TapReply:
    return p.TapReply(card=charger.simulated_tap(id_tag(cmd.card)))


def _ev(charger: Charger, cmd: p.SetEv) -> p.Ok:
    settings = {k: v for k, v in cmd.fields_wire().items() if k != "connector" and v is not None}
    _sim_connector(charger, cmd.connector).set_ev(**settings)
    return p.Ok()


def _fault(charger: Charger, cmd: p.InjectFault) -> p.Ok:
    _sim_connector(charger, cmd.connector).inject(cmd.kind, active=not cmd.clear)
    return p.Ok()


def _pilot(charger: Charger, cmd: p.SetPilot) -> p.Ok:
    levels = None if cmd.high_v is None or cmd.low_v is None else (cmd.high_v, cmd.low_v)
    _sim_connector(charger, cmd.connector).inject_pilot(levels)
    return p.Ok()


def _clear_fault(charger: Charger, cmd: p.ClearFault) -> p.Ok:
    _sim_connector(charger, cmd.connector).inject(cmd.kind, active=False)
    return p.Ok()


def _clear_faults(charger: Charger, cmd: p.ClearFaults) -> p.ConnectorReply:
    ctrl = charger.connector(cmd.connector)
    ctrl.publish("fault.cleared_by_person")
    ctrl.feed(ev.ClearFaults())
    return p.ConnectorReply(connector=ctrl.id)


def _remote_start(charger: Charger, cmd: p.RemoteStart) -> p.StartReply:
    """The id tag as given: a CSMS's idToken goes back in its StartTransaction unchanged (only a
    card the reader reads is canonical hex)."""
    ctrl, tag = charger.connector(cmd.connector), cmd.id_tag
    refusal = remote_start_refusal(ctrl.state, tag)  # the step's own outcome (tests/test_core_invariant.py)
    if not cmd.check:
        ctrl.feed(ev.RemoteStart(tag))
    return p.StartReply(connector=ctrl.id, result="Rejected" if refusal else "Accepted", reason=refusal or None)


def _remote_stop(charger: Charger, cmd: p.RemoteStop) -> p.StopReply:
    ctrl = charger.connector(cmd.connector)
    running = ctrl.state.session
    ctrl.feed(ev.StopRequested(STOP_REASONS[cmd.reason]))
    return p.StopReply(connector=ctrl.id, result="Accepted" if running else "Rejected")


def _availability(charger: Charger, cmd: p.Availability) -> p.AvailabilityReply:
    return p.AvailabilityReply(result=charger.set_availability(cmd.connector, cmd.operative, keep=not cmd.hold))


def _reserve(charger: Charger, cmd: p.Reserve) -> p.ReserveReply:
    if cmd.until is not None:
        seconds = (cmd.until - charger.wallclock()).total_seconds()
    else:
        seconds = cmd.for_s or 0.0
    tag = id_tag(cmd.id_tag)
    ctrls = charger.connectors_for(cmd.connector)
    answers = [(reservation_answer(c.state), c) for c in ctrls]
    free = [c for answer, c in answers if answer == "Accepted"]
    if not free:
        return p.ReserveReply(result=cast(Any, answers[0][0]) if len(answers) == 1 else "Occupied")
    ctrl = free[0]
    ctrl.feed(ev.Reserve(tag, charger.clock() + max(0.0, seconds)))
    ok = ctrl.state.reservation is not None and ctrl.state.reservation[0] == tag
    if ok:
        charger.reservations[ctrl.id] = cmd.reservation_id
    return p.ReserveReply(connector=ctrl.id, result="Accepted" if ok else "Rejected")


def _cancel_reservation(charger: Charger, cmd: p.CancelReservation) -> p.CancelReply:
    wanted = cmd.reservation_id
    for cid, rid in list(charger.reservations.items()):
        ctrl = charger.connector(cid)
        if (wanted is None or rid == wanted) and ctrl.state.reservation is not None:
            ctrl.feed(ev.CancelReservation())
            del charger.reservations[cid]
            return p.CancelReply(result="Accepted", connector=cid)
    if wanted is None and cmd.connector is not None:
        charger.connector(cmd.connector).feed(ev.CancelReservation())
        return p.CancelReply(result="Accepted")
    return p.CancelReply(result="Rejected")


def _limit(charger: Charger, cmd: p.Limit) -> p.Ok:
    ctrls = charger.connectors_for(cmd.connector)
    if cmd.current_a is not None and any(cmd.source not in c.state.limits for c in ctrls):
        others = {s for c in ctrls for s in c.state.limits if s not in p.DAEMON_SOURCES}
        if len(others | {cmd.source}) > MAX_COMMAND_SOURCES:
            raise CommandError(f"limit: at most {MAX_COMMAND_SOURCES} sources set by commands "
                               f"({', '.join(sorted(others))}); lift one first")
    limit = ocpp_source.limit(cmd.source, cmd.current_a)
    for ctrl in ctrls:
        ctrl.feed(ev.LimitChanged(limit.source, limit.current_a, limit.detail))
        ctrl.publish("limit.changed", source=cmd.source, current_a=cmd.current_a,
                     allowed_a=ctrl.chain().allowed_a)
    return p.Ok()


def _mode(charger: Charger, cmd: p.SetMode) -> p.ModeReply:
    if cmd.mode not in charger.modes():
        raise CommandError(f"mode {cmd.mode} {NEEDS_SITE_METER}; this charger can follow: {', '.join(charger.modes())}")
    charger.mode = cmd.mode
    charger.publish("mode.changed", mode=cmd.mode)
    return p.ModeReply(mode=cmd.mode)


def _site(charger: Charger, cmd: p.SetSite) -> p.SiteReply:
    """The simulated site: house loads per phase, PV, a profile file, the control contact, the meter."""
    from simulator.site import load_profile
    site = charger.world.site
    changes: dict[str, Any] = {}
    phases = (cmd.l1_a, cmd.l2_a, cmd.l3_a)
    if any(a is not None for a in phases):
        house = list(site.now()[0])
        changes["house_a"] = tuple(house[i] if a is None else a for i, a in enumerate(phases))
    if cmd.pv_w is not None:
        changes["pv_w"] = cmd.pv_w
    if cmd.profile is not None:
        try:
            changes["profile"] = load_profile(Path(cmd.profile))
        except (OSError, ValueError) as exc:
            raise CommandError(f"site: profile: {exc}") from None
    if cmd.input is not None:
        changes["contact"] = cmd.input
    if cmd.meter is not None:
        changes["meter_silent"] = cmd.meter == "silent"
    site.set(**changes)
    charger.policy.poll()
    house, pv = site.now()
    return p.SiteReply(house_a=tuple(house), pv_w=pv, grid_a=tuple(site.grid_a()), input=site.contact,
                       meter="silent" if site.meter_silent else "ok")


def _cable(charger: Charger, cmd: p.SetCable) -> p.CableReply:
    bench = _sim_connector(charger, cmd.connector)
    bench.cable_ohm = cmd.ohm
    charger.policy.refresh()
    return p.CableReply(ohm=bench.cable_ohm)


def _learn(charger: Charger, cmd: p.Learn) -> p.LearnReply:
    charger.learning = charger.clock() + cmd.timeout_s
    charger.learned = None
    return p.LearnReply(waiting=True)


def _learned(charger: Charger, cmd: p.Learned) -> p.LearnedReply:
    if charger.learning is not None and charger.clock() >= charger.learning:
        charger.learning = None
    return p.LearnedReply(waiting=charger.learning is not None, card=charger.learned)


def _reload(charger: Charger, cmd: p.Reload) -> p.ReloadReply:
    from evsed import config as configmod
    try:
        new = configmod.load(charger.config.path)
    except configmod.ConfigError as exc:
        raise CommandError(f"reload refused, the running config stays: {exc}") from None
    return charger.reload(new)


def _add_card(charger: Charger, cmd: p.AddCard) -> p.AddCardReply:
    from evsed import config as configmod
    from evsed.config import edit
    uid, path = id_tag(cmd.uid), charger.config.path
    if charger.writing_config:
        raise CommandError(f"{path} is being written; try again in a moment")
    known = charger.auth.local.card(uid)
    if known is not None:
        raise CommandError(f"card {uid} is already in {path}" + (f" as {known.name!r}" if known.name else ""))
    # only a card tapped on the reader for `learn`, a few minutes ago: a service (the web page) can
    # add no card it made up, so a compromised page cannot let an unknown card charge
    learned, at = charger.learned, charger.learned_at
    if learned is None or learned.uid != uid or at is None or charger.clock() - at > LEARNED_VALID_S:
        raise CommandError(f"card {uid} is not the card last tapped for learn (within {LEARNED_VALID_S // 60:.0f} "
                           "minutes): learn it on the reader first")
    groups = set(charger.config.policy.groups) | {c.group for c in charger.config.cards if c.group}
    if cmd.group and cmd.group not in groups:  # a typo would make a group with no rules of its own
        raise CommandError(f"no group named {cmd.group!r} in {path} (a [[group]] table or a card's group)")
    block = edit.card_block(uid, cmd.name, cmd.group)
    why = edit.writable(path)
    if why is not None:
        raise CommandError(f"cannot add the card: {why}; add this to {path} by hand and reload:\n{block}")
    try:
        text = edit.with_card(path.read_text(encoding="utf-8"), block)
        new = configmod.parse(text, path)
    except (OSError, UnicodeDecodeError) as exc:
        raise CommandError(f"cannot read {path}: {exc}") from None
    except configmod.ConfigError as exc:
        raise CommandError(f"the card would make the config invalid, nothing written: {exc}") from None
    charger.save_config(text, new)
    return p.AddCardReply(result="Accepted", toml=block)


def _unlock(charger: Charger, cmd: p.Unlock) -> p.UnlockReply:
    charger.connector(cmd.connector)
    return p.UnlockReply(result="NotSupported")  # no connector lock backend yet: a tethered cable needs none


def _meter_delivered(charger: Charger, cmd: p.MeterDelivered) -> p.Ok:
    charger.meter_delivered(charger.connector(cmd.connector).id, cmd.session, cmd.energy_wh)
    return p.Ok()


HANDLERS: dict[type[p.Command[Any]], Handler] = {
    p.Plug: _plug, p.Unplug: _unplug, p.Tap: _tap, p.SetEv: _ev, p.InjectFault: _fault, p.ClearFault: _clear_fault,
    p.SetPilot: _pilot, p.SetSite: _site, p.SetCable: _cable,
    p.ClearFaults: _clear_faults, p.RemoteStart: _remote_start, p.RemoteStop: _remote_stop,
    p.Availability: _availability, p.Reserve: _reserve, p.CancelReservation: _cancel_reservation,
    p.Limit: _limit, p.SetMode: _mode, p.Unlock: _unlock, p.Learn: _learn, p.Learned: _learned,
    p.Reload: _reload, p.AddCard: _add_card, p.MeterDelivered: _meter_delivered,
}
HANDLERS_BY_NAME = {cls.ACTION or cls.CMD: cls for cls in HANDLERS}  # as a scenario step names them

import evsed.shell.plan_commands  # noqa: E402,F401 - adds the charging plans' handlers (they use the names above)
