"""Every command a person, a service or a scenario can give the charger, defined once.

The control socket and the scenario runner both call run(); each command names its fields
with their types and bounds, so a bad request changes nothing and gets a clear error.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from pathlib import Path
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from evsed.core import events as ev
from evsed.core.state import reservation_answer
from hal import canonical_uid

if TYPE_CHECKING:
    from evsed.shell.charger import Charger

MAX_ID_TAG = 64  # hex UIDs are at most 20 chars; OCPP idTags at most 20 (1.6) or 36 (2.0.1)
MODES = ("fast", "solar", "min+solar")
STOP_REASONS = {"remote": ev.StopReason.REMOTE, "deauthorized": ev.StopReason.DEAUTHORIZED,
                "local": ev.StopReason.LOCAL, "other": ev.StopReason.OTHER}


class CommandError(ValueError):
    """A request the charger cannot take; the message says why."""


@dataclass(frozen=True)
class Field:
    kind: str  # "int", "number", "bool", "str", "id_tag", "time", "choice"
    required: bool = True
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] = ()
    nullable: bool = False


@dataclass(frozen=True)
class Command:
    fields: dict[str, Field]
    run: Callable[[Charger, dict[str, Any]], dict[str, Any]]
    sim: bool = False  # drives the simulated world: only where one runs
    doc: str = ""


def check(name: str, field: Field, value: Any) -> Any:
    """One field's value, type-checked and bounded; raises CommandError."""
    if value is None and field.nullable:
        return None
    k = field.kind
    if k == "bool":
        if not isinstance(value, bool):
            raise CommandError(f"{name}: expected true or false, got {_show(value)}")
        return value
    if k in ("int", "number"):
        ok = isinstance(value, int) if k == "int" else isinstance(value, (int, float))
        if isinstance(value, bool) or not ok or (isinstance(value, float) and not math.isfinite(value)):
            raise CommandError(f"{name}: expected {'an integer' if k == 'int' else 'a number'}, got {_show(value)}")
        if (field.min is not None and value < field.min) or (field.max is not None and value > field.max):
            raise CommandError(f"{name}: expected {field.min:g}..{field.max:g}, got {_show(value)}")
        return value
    if not isinstance(value, str):
        raise CommandError(f"{name}: expected a string, got {_show(value)}")
    if k == "choice":
        if value not in field.choices:
            raise CommandError(f"{name}: expected one of {', '.join(field.choices)}, got {_show(value)}")
        return value
    if k == "id_tag":
        try:
            tag = canonical_uid(value) if re.fullmatch(r"[0-9A-Fa-f:\- ]+", value) else value
        except ValueError:
            tag = value
        if not tag or len(tag) > MAX_ID_TAG or not tag.isprintable():
            raise CommandError(f"{name}: expected a card id of 1..{MAX_ID_TAG} printable characters")
        return tag
    if k == "time":
        try:
            when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise CommandError(f"{name}: expected an ISO 8601 time, got {_show(value)}") from None
        if when.tzinfo is None:
            raise CommandError(f"{name}: expected a time with its UTC offset, got {_show(value)}")
        return when
    if len(value) > 200:
        raise CommandError(f"{name}: longer than 200 characters")
    return value


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def run(charger: Charger, name: str, request: dict[str, Any], *, skip: frozenset[str] = frozenset()) -> dict[str, Any]:
    """Validate the request's fields for command `name` and run it; `skip` names envelope keys."""
    command = COMMANDS.get(name)
    if command is None:
        raise CommandError(f"unknown command {name!r}")
    if command.sim and charger.world is None:
        raise CommandError("this daemon runs no simulated hardware")
    extra = set(request) - set(command.fields) - skip
    if extra:
        raise CommandError(f"{name}: unknown field(s) {', '.join(sorted(map(str, extra)))}")
    args = {}
    for key, field in command.fields.items():
        if key in request:
            args[key] = check(key, field, request[key])
        elif field.required:
            raise CommandError(f"{name}: {key} missing")
    return {"ok": True, **command.run(charger, args)}


def is_sim(name: str) -> bool:
    command = COMMANDS.get(name)
    return command is not None and command.sim


# --- the commands ------------------------------------------------------------------------------

CONNECTOR = Field("int", required=False, min=1, max=99)
CONNECTOR_OR_ALL = Field("int", required=False, min=0, max=99)


def _sim_connector(charger: Charger, args: dict[str, Any]) -> Any:
    return charger.world.connector(charger.connector(args.get("connector")).id)


def _plug(charger: Charger, args: dict[str, Any]) -> dict[str, Any]:
    _sim_connector(charger, args).plug()
    return {}


def _unplug(charger: Charger, args: dict[str, Any]) -> dict[str, Any]:
    _sim_connector(charger, args).unplug()
    return {}


def _tap(charger: Charger, args: dict[str, Any]) -> dict[str, Any]:
    return {"card": charger.simulated_tap(args["card"])}


def _ev(charger: Charger, args: dict[str, Any]) -> dict[str, Any]:
    settings = {k: v for k, v in args.items() if k != "connector"}
    if "max_current_a" in settings:
        settings["max_current_a"] = float(settings["max_current_a"])
    _sim_connector(charger, args).set_ev(**settings)
    return {}


def _fault(charger: Charger, args: dict[str, Any]) -> dict[str, Any]:
    _sim_connector(charger, args).inject(args["kind"], active=not args.get("clear", False))
    return {}


def _pilot(charger: Charger, args: dict[str, Any]) -> dict[str, Any]:
    high, low = args.get("high_v"), args.get("low_v")
    if high is None and low is None:
        levels = None
    elif high is None or low is None:
        raise CommandError("pilot: give both high_v and low_v, or neither to let the EV speak again")
    else:
        levels = (float(high), float(low))
    _sim_connector(charger, args).inject_pilot(levels)
    return {}


def _clear_fault(charger: Charger, args: dict[str, Any]) -> dict[str, Any]:
    _sim_connector(charger, args).inject(args["kind"], active=False)
    return {}


def _feed(event: ev.Event) -> Callable[[Charger, dict[str, Any]], dict[str, Any]]:
    def run_(charger: Charger, args: dict[str, Any]) -> dict[str, Any]:
        ctrl = charger.connector(args.get("connector"))
        ctrl.feed(event)
        return {"connector": ctrl.id}
    return run_


def _clear_faults(charger: Charger, args: dict[str, Any]) -> dict[str, Any]:
    ctrl = charger.connector(args.get("connector"))
    ctrl.publish("fault.cleared_by_person")
    ctrl.feed(ev.ClearFaults())
    return {"connector": ctrl.id}


def _remote_start(charger: Charger, args: dict[str, Any]) -> dict[str, Any]:
    ctrl = charger.connector(args.get("connector"))
    ctrl.feed(ev.RemoteStart(args["id_tag"]))
    accepted = ctrl.state.id_tag == args["id_tag"]
    return {"connector": ctrl.id, "result": "Accepted" if accepted else "Rejected",
            **({} if accepted else {"reason": ctrl.state.refusal})}


def _remote_stop(charger: Charger, args: dict[str, Any]) -> dict[str, Any]:
    ctrl = charger.connector(args.get("connector"))
    running = ctrl.state.session
    ctrl.feed(ev.StopRequested(STOP_REASONS[args.get("reason", "remote")]))
    return {"connector": ctrl.id, "result": "Accepted" if running else "Rejected"}


def _availability(charger: Charger, args: dict[str, Any]) -> dict[str, Any]:
    ctrls = charger.connectors_for(args.get("connector", 0))
    for ctrl in ctrls:
        ctrl.feed(ev.SetAvailability(args["operative"]))
    scheduled = any(c.state.session for c in ctrls) and not args["operative"]
    return {"result": "Scheduled" if scheduled else "Accepted"}


def _reserve(charger: Charger, args: dict[str, Any]) -> dict[str, Any]:
    if "until" in args:
        seconds = (args["until"] - charger.wallclock()).total_seconds()
    elif "for_s" in args:
        seconds = float(args["for_s"])
    else:
        raise CommandError("reserve: until or for_s missing")
    ctrls = charger.connectors_for(args.get("connector", 0))
    answers = [(reservation_answer(c.state), c) for c in ctrls]
    free = [c for answer, c in answers if answer == "Accepted"]
    if not free:
        return {"result": answers[0][0] if len(answers) == 1 else "Occupied"}
    ctrl = free[0]
    ctrl.feed(ev.Reserve(args["id_tag"], charger.clock() + max(0.0, seconds)))
    ok = ctrl.state.reservation is not None and ctrl.state.reservation[0] == args["id_tag"]
    if ok:
        charger.reservations[ctrl.id] = args.get("reservation_id", 0)
    return {"connector": ctrl.id, "result": "Accepted" if ok else "Rejected"}


def _cancel_reservation(charger: Charger, args: dict[str, Any]) -> dict[str, Any]:
    wanted = args.get("reservation_id")
    for cid, rid in list(charger.reservations.items()):
        ctrl = charger.connector(cid)
        if (wanted is None or rid == wanted) and ctrl.state.reservation is not None:
            ctrl.feed(ev.CancelReservation())
            del charger.reservations[cid]
            return {"result": "Accepted", "connector": cid}
    if wanted is None and "connector" in args:
        charger.connector(args["connector"]).feed(ev.CancelReservation())
        return {"result": "Accepted"}
    return {"result": "Rejected"}


def _limit(charger: Charger, args: dict[str, Any]) -> dict[str, Any]:
    source = args.get("source", "scenario")
    for ctrl in charger.connectors_for(args.get("connector", 0)):
        ctrl.feed(ev.LimitChanged(source, args.get("current_a")))
        ctrl.publish("limit.changed", source=source, current_a=args.get("current_a"),
                     allowed_a=ctrl.status()["allowed_a"])
    return {}


def _mode(charger: Charger, args: dict[str, Any]) -> dict[str, Any]:
    charger.mode = args["mode"]
    charger.publish("mode.changed", mode=args["mode"])
    return {"mode": charger.mode}


def _site(charger: Charger, args: dict[str, Any]) -> dict[str, Any]:
    """The simulated site: house loads per phase, PV, a profile file, the control contact, the meter."""
    from simulator.site import load_profile
    site = charger.world.site
    changes: dict[str, Any] = {}
    if any(k in args for k in ("l1_a", "l2_a", "l3_a")):
        house = list(site.now()[0])
        for p, key in enumerate(("l1_a", "l2_a", "l3_a")):
            house[p] = float(args.get(key, house[p]))
        changes["house_a"] = tuple(house)
    if "pv_w" in args:
        changes["pv_w"] = float(args["pv_w"])
    if "profile" in args:
        try:
            changes["profile"] = load_profile(Path(args["profile"]))
        except (OSError, ValueError) as exc:
            raise CommandError(f"site: profile: {exc}") from None
    if "input" in args:
        changes["contact"] = args["input"]
    if "meter" in args:
        changes["meter_silent"] = args["meter"] == "silent"
    site.set(**changes)
    charger.policy.poll()
    house, pv = site.now()
    return {"house_a": list(house), "pv_w": pv, "grid_a": list(site.grid_a()), "input": site.contact,
            "meter": "silent" if site.meter_silent else "ok"}


def _cable(charger: Charger, args: dict[str, Any]) -> dict[str, Any]:
    bench = _sim_connector(charger, args)
    bench.cable_ohm = args.get("ohm")
    charger.policy.refresh()
    return {"ohm": bench.cable_ohm}


def _learn(charger: Charger, args: dict[str, Any]) -> dict[str, Any]:
    charger.learning = charger.clock() + args.get("timeout_s", 60.0)
    charger.learned = None
    return {"waiting": True}


def _learned(charger: Charger, args: dict[str, Any]) -> dict[str, Any]:
    if charger.learning is not None and charger.clock() >= charger.learning:
        charger.learning = None
    return {"waiting": charger.learning is not None, "card": charger.learned}


def _reload(charger: Charger, args: dict[str, Any]) -> dict[str, Any]:
    from evsed import config as configmod
    try:
        new = configmod.load(charger.config.path)
    except configmod.ConfigError as exc:
        raise CommandError(f"reload refused, the running config stays: {exc}") from None
    return charger.reload(new)


def _unlock(charger: Charger, args: dict[str, Any]) -> dict[str, Any]:
    charger.connector(args.get("connector"))
    return {"result": "NotSupported"}  # no connector lock backend yet: a tethered cable needs none


EV_FLAGS = ("wants_energy", "ventilation", "asleep", "obey_pwm", "ignore_stop")

COMMANDS: dict[str, Command] = {
    # the simulated world
    "plug": Command({"connector": CONNECTOR}, _plug, sim=True, doc="plug the simulated EV in"),
    "unplug": Command({"connector": CONNECTOR}, _unplug, sim=True, doc="unplug it"),
    "tap": Command({"card": Field("id_tag"), "connector": CONNECTOR}, _tap, sim=True,
                   doc="tap a card on the simulated reader"),
    "ev": Command({"connector": CONNECTOR, "max_current_a": Field("number", False, 0, 80),
                   "phases": Field("int", False, 1, 3), **{f: Field("bool", False) for f in EV_FLAGS}},
                  _ev, sim=True, doc="change the simulated EV"),
    "fault": Command({"connector": CONNECTOR, "kind": Field("str"), "clear": Field("bool", False)}, _fault,
                     sim=True, doc="inject (or clear) a hardware fault"),
    "clear-fault": Command({"connector": CONNECTOR, "kind": Field("str")}, _clear_fault, sim=True),
    "pilot": Command({"connector": CONNECTOR, "high_v": Field("number", False, -15, 15),
                      "low_v": Field("number", False, -15, 15)}, _pilot, sim=True,
                     doc="the pilot reads exactly these volts (both), or the EV again (neither)"),
    # the charger
    "clear-faults": Command({"connector": CONNECTOR}, _clear_faults, doc="a person cleared latched faults"),
    "remote-start": Command({"connector": CONNECTOR, "id_tag": Field("id_tag")}, _remote_start),
    "remote-stop": Command({"connector": CONNECTOR, "reason": Field("choice", False, choices=tuple(STOP_REASONS))},
                           _remote_stop),
    "availability": Command({"connector": CONNECTOR_OR_ALL, "operative": Field("bool")}, _availability),
    "reserve": Command({"connector": CONNECTOR_OR_ALL, "id_tag": Field("id_tag"), "until": Field("time", False),
                        "for_s": Field("number", False, 0, 7 * 86400),
                        "reservation_id": Field("int", False, 0, 2**31 - 1)}, _reserve),
    "cancel-reservation": Command({"reservation_id": Field("int", False, 0, 2**31 - 1), "connector": CONNECTOR},
                                  _cancel_reservation),
    "limit": Command({"source": Field("str", False), "connector": CONNECTOR_OR_ALL,
                      "current_a": Field("number", False, 0, 1000, nullable=True)}, _limit),
    "mode": Command({"mode": Field("choice", choices=MODES)}, _mode),
    "unlock": Command({"connector": CONNECTOR}, _unlock),
    "learn": Command({"timeout_s": Field("number", False, 1, 600)}, _learn,
                     doc="the next tap is read for `evsed cards learn`, not used"),
    "learned": Command({}, _learned, doc="the card the last learn read, or still waiting"),
    "reload": Command({}, _reload, doc="read the config file again; a running session continues"),
    "site": Command({"l1_a": Field("number", False, -1000, 1000), "l2_a": Field("number", False, -1000, 1000),
                     "l3_a": Field("number", False, -1000, 1000), "pv_w": Field("number", False, 0, 1e6),
                     "profile": Field("str", False), "input": Field("bool", False),
                     "meter": Field("choice", False, choices=("ok", "silent"))}, _site, sim=True,
                    doc="the simulated site: house loads, PV, a profile, the control contact, the meter"),
    "cable": Command({"connector": CONNECTOR, "ohm": Field("number", False, 0, 1e6, nullable=True)}, _cable,
                     sim=True, doc="the PP resistor of the simulated socket's cable"),
}
