"""The policy tables: [[group]], [[window]] and the load-management keys of [site].

Parsed into frozen values the shell's policy (evsed.shell.policy) evaluates with the pure
modules evsed.core.windows and evsed.core.loadmgmt. Every key's default is written here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Mapping
from zoneinfo import ZoneInfo

from evsed.core import loadmgmt, windows

if TYPE_CHECKING:
    from evsed.config import Device, _Table

MODES = tuple(m.value for m in loadmgmt.Mode)  # fast, solar, min+solar
NEEDS_SITE_METER = "needs a site meter ([site.meter]) to measure the surplus"


def modes_served(has_site_meter: bool) -> tuple[str, ...]:
    """The charging modes a charger can follow: the solar ones need a site meter (without one the
    surplus is unknown, and the EV would charge at full current while the status says solar)."""
    return MODES if has_site_meter else (loadmgmt.Mode.FAST.value,)
STOP_BY = ("card", "group", "master")
DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class GroupPlan:
    """A group's default charging plan: energy_wh by the next by_min (minutes after local
    midnight) that falls on one of `days` (0 = Monday), for each session that has no plan."""

    energy_wh: int
    by_min: int
    days: frozenset[int]


@dataclass(frozen=True)
class Group:
    """A card group: its windows, current cap, who may stop its sessions, mode, the battery size
    of its vehicles (for plans by state of charge) and its default charging plan."""

    name: str
    max_current_a: float | None = None  # None: no cap of its own
    stop_by: str = "card"  # "card": the starting card; "group": any card of the group; "master": a master card
    master: bool = False  # its cards may stop a session whose group says stop_by = "master"
    free_vend_exempt: bool = False  # in free-vend mode its cards charge under their own group's rules
    mode: str | None = None  # None: the charger's mode
    battery_kwh: float | None = None  # its vehicles' usable battery: a plan to 80 % needs it
    plan: GroupPlan | None = None  # None: its sessions charge as they come unless given a plan
    phases: tuple[int, ...] | None = None  # the phases (1 = L1) its vehicles draw on, when known


@dataclass(frozen=True)
class ModeWindow:
    """A window that switches the charger's mode while it is open (action = "mode")."""

    window: windows.Window  # action forbid: "inside" is "not allowed" when evaluated alone
    mode: str


@dataclass(frozen=True)
class SiteLoad:
    """Dynamic load management and solar surplus from the site meter; the external cap input."""

    dlm: loadmgmt.SiteConfig | None = None  # None: no breaker_a given, no load management
    solar: loadmgmt.SolarConfig = loadmgmt.SolarConfig()
    input: Device | None = None  # [site.input]: a digital input (ripple control, §14a EnWG)
    cap_kw: float = 4.2  # power cap while the input is active (§14a: 4.2 kW)
    # no good site reading this long: it is stale (status, solar, the grid share ignore it); with load
    # management its meter_timeout_s, else [timing] meter_timeout_s
    meter_timeout_s: float = 10.0


@dataclass(frozen=True)
class PolicyConfig:
    groups: Mapping[str, Group] = field(default_factory=lambda: MappingProxyType({}))
    schedule: windows.Schedule = windows.Schedule(ZoneInfo("UTC"))
    mode_windows: tuple[ModeWindow, ...] = ()

    def group(self, name: str | None) -> Group:
        return self.groups.get(name or "") or Group(name or "")


def parse(top: _Table, timezone: str, unsynced: str, card_groups: set[str],
          supply_phases: int = 3) -> PolicyConfig:
    """[[group]] and [[window]]; windows in the charger's time zone."""
    groups = _groups(top, supply_phases)
    known = set(groups) | card_groups
    plain, modal = _windows(top, groups, known)
    schedule = windows.Schedule(ZoneInfo(timezone), tuple(plain), windows.UnsyncedRule(unsynced))
    return PolicyConfig(MappingProxyType(groups), schedule, tuple(modal))


def _array(top: _Table, key: str) -> list[tuple[int, dict]]:
    top.used.add(key)
    raw: Any = top.data.get(key, [])
    if not isinstance(raw, list) or not all(isinstance(item, dict) for item in raw):
        raise top.error(key, f"expected [[{key}]] tables")
    return list(enumerate(raw))


def _groups(top: _Table, supply_phases: int) -> dict[str, Group]:
    from evsed.config import _Table as Table, phase_list
    out: dict[str, Group] = {}
    for index, item in _array(top, "group"):
        t = Table(top.path, top.lines, item, f"group[{index}]")
        name = t.get("name", str, max_len=64)
        if name in out:
            raise t.error("name", f"group {name!r} is defined twice")
        cap = t.get("max_current_a", float, None, min=0, max=80)
        g = Group(name, cap, t.get("stop_by", str, "card", choices=STOP_BY), t.get("master", bool, False),
                  t.get("free_vend_exempt", bool, False), t.get("mode", str, None, choices=MODES),
                  t.get("battery_kwh", float, None, min=1, max=300), _group_plan(t),
                  phase_list(t, supply_phases))
        t.used.add("windows")
        names = item.get("windows", [])
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise t.error("windows", "expected a list of window names")
        t.done()
        out[name] = g
        out[name + "\0windows"] = (index, tuple(names))  # type: ignore[assignment]  # resolved in _windows
    return out


def _group_plan(t: _Table) -> GroupPlan | None:
    """plan = { energy_kwh = 30, by = "06:30", days = ["mon-fri"] }"""
    p = t.table("plan")
    if p is None:
        return None
    energy = p.get("energy_kwh", float, min=0.1, max=300)
    try:
        by = windows.parse_hhmm(p.get("by", str, max_len=5))
        if by >= windows.MINUTES_PER_DAY:
            raise ValueError("expected 00:00..23:59")
    except ValueError as exc:
        raise p.error("by", str(exc)) from None
    plan = GroupPlan(round(energy * 1000), by, _days(p))
    p.done()
    return plan


def _days(t: _Table) -> frozenset[int]:
    days = t.get("days", (list, str), "mon-sun")
    items = days if isinstance(days, list) else [days]
    out: set[int] = set()
    for item in items:
        if not isinstance(item, str):
            raise t.error("days", f"expected day names such as \"mon\" or \"mon-fri\", got {item!r}")
        first, _, last = item.strip().lower().partition("-")
        if first not in DAY_NAMES or (last and last not in DAY_NAMES):
            raise t.error("days", f"expected day names mon..sun or a range \"mon-fri\", got {item!r}")
        a, b = DAY_NAMES.index(first), DAY_NAMES.index(last or first)
        out |= set(range(a, b + 1)) if a <= b else set(range(a, 7)) | set(range(0, b + 1))
    return frozenset(out)


def _windows(top: _Table, groups: dict, known: set[str]):
    from evsed.config import _Table as Table
    by_window: dict[str, set[str]] = {}
    named_at: dict[str, int] = {}  # window name -> the index of the first [[group]] naming it
    for name, value in list(groups.items()):
        if name.endswith("\0windows"):
            del groups[name]
            group_index, window_names = value
            for w in window_names:
                by_window.setdefault(w, set()).add(name[:-len("\0windows")])
                named_at.setdefault(w, group_index)
    plain, modal, seen = [], [], {}
    for index, item in _array(top, "window"):
        t = Table(top.path, top.lines, item, f"window[{index}]")
        name = t.get("name", str, f"window {index + 1}", max_len=64)
        if name in seen:
            raise t.error("name", f"window {name!r} is defined twice")
        seen[name] = index
        action = t.get("action", str, choices=("allow", "forbid", "cap", "mode"))
        cap = t.get("max_current_a", float, None, min=0, max=80)
        mode = t.get("mode", str, None, choices=MODES)
        t.used.add("groups")
        names = item.get("groups", [])
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise t.error("groups", "expected a list of group names")
        for g in names:
            if g not in known:
                raise t.error("groups", f"no [[group]] or [[card]] has group {g!r}")
        if (action == "cap") != (cap is not None):
            raise t.error("max_current_a", "goes with action = \"cap\", and that action needs it")
        if (action == "mode") != (mode is not None):
            raise t.error("mode", "goes with action = \"mode\", and that action needs it")
        try:
            start, end = windows.parse_hhmm(t.get("start", str)), windows.parse_hhmm(t.get("end", str))
            if start >= windows.MINUTES_PER_DAY:
                raise ValueError("start must be 00:00..23:59")
            w = windows.Window(name, _days(t), start, end,
                               windows.Action.FORBID if action == "mode" else windows.Action(action),
                               cap, frozenset(names) | by_window.pop(name, set()))
        except ValueError as exc:
            raise t.error("start", str(exc)) from None
        t.done()
        (modal.append(ModeWindow(w, mode)) if action == "mode" else plain.append(w))
    if by_window:
        name = min(by_window, key=lambda w: named_at[w])
        group = Table(top.path, top.lines, {}, f"group[{named_at[name]}]")
        raise group.error("windows", f"group {sorted(by_window[name])[0]!r} names window {name!r}, "
                          "which no [[window]] defines")
    return plain, modal


def parse_site(t: _Table | None, voltage_v: float, timing: Any) -> SiteLoad:
    """The load-management keys of [site] (its meter is parsed beside them) and [site.input]."""
    if t is None:
        return SiteLoad()
    from evsed.config import _device
    d, s = loadmgmt.SiteConfig(), loadmgmt.SolarConfig()
    breaker = t.get("breaker_a", (float, list), None)
    dlm = None
    if breaker is not None:
        per_phase = breaker if isinstance(breaker, list) else [breaker] * 3
        if len(per_phase) not in (1, 3) or not all(
                isinstance(a, (int, float)) and not isinstance(a, bool) and 0 <= a <= 1000 for a in per_phase):
            raise t.error("breaker_a", "expected A per phase: one number, or [L1, L2, L3] (0: no such phase)")
        per_phase = [float(a) for a in per_phase] + [0.0] * (3 - len(per_phase))
        if "meter" not in t.data:
            raise t.error("breaker_a", "load management needs a site meter: add [site.meter]")
        dlm = loadmgmt.SiteConfig(
            breaker_a=tuple(per_phase),  # type: ignore[arg-type]
            headroom_a=t.get("headroom_a", float, d.headroom_a, min=0, max=100),
            fallback_a=t.get("fallback_a", float, d.fallback_a, min=0, max=1000),
            meter_timeout_s=t.get("meter_timeout_s", float, d.meter_timeout_s, min=1, max=600),
            grace_s=timing.current_change_grace_s, stop_grace_s=timing.stop_grace_s,
            raise_interval_s=t.get("raise_interval_s", float, d.raise_interval_s, min=0, max=3600),
            raise_step_a=t.get("raise_step_a", float, d.raise_step_a, min=0, max=32),
            min_pause_s=t.get("min_pause_s", float, d.min_pause_s, min=0, max=3600),
            resume_margin_a=t.get("resume_margin_a", float, d.resume_margin_a, min=0, max=32),
            share=t.get("share", str, d.share, choices=("equal", "priority")),
            min_first=t.get("min_first", bool, d.min_first),
            draw_margin_a=t.get("draw_margin_a", float, d.draw_margin_a, min=0.1, max=32),
            reoffer_interval_s=t.get("reoffer_interval_s", float, d.reoffer_interval_s, min=10, max=86400),
            rotate_s=t.get("rotate_s", float, d.rotate_s, min=0, max=86400))
    else:
        for key in ("headroom_a", "fallback_a", "meter_timeout_s", "raise_interval_s", "raise_step_a",
                    "min_pause_s", "resume_margin_a", "share", "min_first", "draw_margin_a", "reoffer_interval_s",
                    "rotate_s"):
            if key in t.data:
                raise t.error(key, "goes with breaker_a (load management is off without it)")
    solar = loadmgmt.SolarConfig(
        voltage_v=voltage_v, start_delay_s=t.get("solar_start_s", float, s.start_delay_s, min=0, max=3600),
        stop_delay_s=t.get("solar_stop_s", float, s.stop_delay_s, min=0, max=3600),
        grid_allowance_a=t.get("solar_grid_a", float, s.grid_allowance_a, min=0, max=32))
    inp = t.table("input")
    device, cap_kw = None, SiteLoad.cap_kw
    if inp is not None:
        cap_kw = inp.get("cap_kw", float, cap_kw, min=0, max=1000)
        device = _device(inp, "input")
    return SiteLoad(dlm, solar, device, cap_kw,
                    dlm.meter_timeout_s if dlm is not None else timing.meter_timeout_s)
