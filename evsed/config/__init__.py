"""The one TOML config file, parsed once into frozen dataclasses through bounded getters.

Every key has a default documented here; unknown keys, wrong types and out-of-range
values raise ConfigError naming file, line and key.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import re
import reprlib
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from evsed import dirs
from evsed.config import backends
from evsed.errors import ConfigError
from evsed.dirs import configured_dir, default_runtime_dir, default_state_dir, is_system
from hal import MIN_EDGES_PER_DROPOUT
from evsed.config import policy as policy_config
from evsed.config import tariff as tariff_config
from evsed.core import tariff as tariffs
from evsed.core.state import CoreConfig
from evsed.config.tomlines import beyond_limits, key_lines
from hal import canonical_uid

MAX_FILE_BYTES = 32 << 20  # a config is kilobytes; this only stops a runaway file
MAX_STR = 256  # characters in a string value unless the key says otherwise
MAX_INT = 2**63 - 1
UID_HEX_MAX = 20  # 10-byte ISO 14443 UIDs; OCPP's idTag is at most 20 characters


@dataclass(frozen=True)
class Device:
    backend: str
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class ConnectorConfig:
    id: int
    cable_a: float  # fixed cable rating, or the charger maximum when cable = "socket"
    pilot: Device
    contactor: Device
    rcd: Device | None
    meter: Device | None
    socket: bool = False  # cable_a = "socket": the plugged cable's rating is read from its PP resistor
    priority: int = 0  # load management: higher first
    breaker_a: float | None = None  # the circuit breaker feeding this connector, A per phase
    phases: tuple[int, ...] | None = None  # the phases (1 = L1) its vehicle draws on, when known


@dataclass(frozen=True)
class ChargerConfig:
    id: str = "evsed"
    phases: int = 3
    max_current_a: float = 32.0
    voltage_v: float = 230.0
    timezone: str = "UTC"
    free_vend: bool = False
    free_vend_id_tag: str = "FREEVEND"
    ventilation: bool = False
    mode: str = "fast"  # fast | solar | min+solar (evsed.config.policy)
    unsynced_clock: str = "ignore"  # windows until the clock is synchronized: ignore | forbid | apply
    free_vend_group: str = ""  # the group whose rules free-vend sessions follow


@dataclass(frozen=True)
class Card:
    uid: str
    name: str = ""
    group: str = ""
    expires: dt.date | None = None
    enabled: bool = True


@dataclass(frozen=True)
class Timing:
    auth_timeout_s: float = 60.0
    stop_grace_s: float = 6.0
    current_change_grace_s: float = 5.0
    rcd_retry_s: float = 300.0
    rcd_max_retries: int = 6
    contactor_settle_s: float = 0.5
    pilot_poll_s: float = 0.05
    pilot_lost_s: float = 0.25
    meter_interval_s: float = 1.0
    meter_timeout_s: float = 10.0
    wakeup_after_s: float = 30.0
    min_pause_s: float = 0.0
    card_repeat_s: float = 2.0


@dataclass(frozen=True)
class StoreConfig:
    state_dir: Path
    runtime_dir: Path
    checkpoint_s: float = 60.0  # how often a running session's meter reading is made durable
    sample_interval_s: float = 10.0  # one meter sample kept per interval while charging
    sample_retention_days: int = 400  # samples of older sessions are deleted; sessions are kept


@dataclass(frozen=True)
class SiteConfig:
    """Charger-level devices: the site (grid) meter; load limits on it come with load management."""

    meter: Device | None = None
    load: policy_config.SiteLoad = policy_config.SiteLoad()


@dataclass(frozen=True)
class AuthConfig:
    """The authorizer chain: the host's card list first, then links the services register."""

    timeout_s: float = 5.0  # a link that has not answered by then counts as "unknown"
    unanswered: str = "reject"  # when every link says "unknown": "reject" or "accept"


@dataclass(frozen=True)
class ControlConfig:
    """The users the network services run as: `evsed run` as root starts each as its own, and a
    service under its own unit connecting as that user gets that service's role on the socket;
    and what the host grants a service beyond its role (the daemon reads it here, never from the service)."""

    ocpp_user: str = dirs.service_user("ocpp")
    web_user: str = dirs.service_user("web")
    mqtt_user: str = dirs.service_user("mqtt")
    prices_user: str = dirs.service_user("prices")
    mqtt_restart: bool = False  # [mqtt] restart_button: the MQTT service may restart the daemon

    def user(self, service: str) -> str:
        return str(getattr(self, f"{service}_user"))

    def granted(self, role: str) -> frozenset[str]:
        """The commands granted to `role` beyond its own (evsed.protocol says which may be granted)."""
        return frozenset({"restart"}) if role == "mqtt" and self.mqtt_restart else frozenset()


@dataclass(frozen=True)
class LogConfig:
    level: str = "info"
    format: str = "auto"  # auto: text on a terminal, JSON lines otherwise


@dataclass(frozen=True)
class SimulatorConfig:
    ev_max_current_a: float = 32.0
    ev_phases: int = 3
    voltage_v: float = 230.0
    meter_start_wh: int = 0


SERVICE_SECTIONS = ("ocpp", "mqtt", "web", "prices")  # tables the service processes check themselves
OPS_SECTIONS = ("update",)  # tables `evsed update` checks itself (evsed/ops/update.py)


@dataclass(frozen=True)
class Section:
    """A service's own table ([ocpp], [mqtt], [web], [prices]), kept raw here and checked by that service's
    parser through table(), so errors name file, line and key like every other table."""

    path: Path
    name: str
    data: Mapping[str, Any]
    lines: Mapping[str, int]

    def table(self) -> Table:
        return Table(self.path, dict(self.lines), dict(self.data), self.name)


@dataclass(frozen=True)
class Config:
    path: Path
    charger: ChargerConfig
    connectors: tuple[ConnectorConfig, ...]
    rfid: Device | None
    cards: tuple[Card, ...]
    timing: Timing
    store: StoreConfig
    log: LogConfig
    simulator: SimulatorConfig
    site: SiteConfig = SiteConfig()
    authorization: AuthConfig = AuthConfig()
    tariff: tariffs.Tariff | None = None  # None: sessions carry no cost or revenue
    sections: Mapping[str, Section] = field(default_factory=lambda: MappingProxyType({}))
    policy: policy_config.PolicyConfig = policy_config.PolicyConfig()
    control: ControlConfig = ControlConfig()

    def services(self) -> list[str]:
        """The services the config runs: every [ocpp], [mqtt], [web], [prices] not `enabled = false`."""
        return [name for name, s in self.sections.items()
                if name in SERVICE_SECTIONS and s.data.get("enabled", True) is not False]

    def core_config(self, connector: ConnectorConfig) -> CoreConfig:
        """The core's view; has_meter and has_feedback follow the devices actually built."""
        t = self.timing
        return CoreConfig(
            max_current_a=self.charger.max_current_a, cable_a=None if connector.socket else connector.cable_a,
            ventilation=self.charger.ventilation, free_vend=self.charger.free_vend,
            free_vend_id_tag=self.charger.free_vend_id_tag,
            auth_timeout_s=t.auth_timeout_s, stop_grace_s=t.stop_grace_s,
            current_change_grace_s=t.current_change_grace_s, rcd_retry_s=t.rcd_retry_s,
            rcd_max_retries=t.rcd_max_retries, contactor_settle_s=t.contactor_settle_s,
            pilot_lost_s=t.pilot_lost_s, meter_timeout_s=t.meter_timeout_s,
            wakeup_after_s=t.wakeup_after_s, min_pause_s=t.min_pause_s, card_repeat_s=t.card_repeat_s)


class _Table:
    """Typed, bounded reads of one TOML table that remember which keys were used."""

    def __init__(self, path: Path, lines: dict[str, int], data: dict, where: str):
        self.path, self.lines, self.data, self.where = path, lines, data, where
        self.used: set[str] = set()

    def line(self, key: str | None = None) -> int | None:
        if key is not None:
            found = _line_of(self.lines, f"{self.where}.{key}" if self.where else key)
            if found is not None:
                return found
        return _line_of(self.lines, self.where) if self.where else None

    def error(self, key: str | None, message: str) -> ConfigError:
        name = _display(self.where)
        return ConfigError(self.path, self.line(key), f"{name} {_short(key)}" if key else name, message)

    def get(self, key: str, kind, default=backends.REQUIRED, *, min=None, max=None, choices=None,
            max_len: int = MAX_STR):
        self.used.add(key)
        if key not in self.data:
            if default is backends.REQUIRED:
                raise self.error(key, "missing (required)")
            return default
        return _check(self, key, self.data[key], kind, min, max, choices, max_len)

    def table(self, key: str) -> _Table | None:
        self.used.add(key)
        value = self.data.get(key)
        if value is None:
            return None
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            raise self.error(key, f"expected one table [{key}], got an array of tables [[{key}]]")
        if not isinstance(value, dict):
            raise self.error(key, f"expected a table, got {_type_name(value)}")
        return _Table(self.path, self.lines, value, f"{self.where}.{key}" if self.where else key)

    def done(self) -> None:
        for key in self.data:
            if key not in self.used:
                import difflib  # only for a misspelled key: not on every start
                hint = difflib.get_close_matches(key, sorted(self.used), n=1) if len(key) <= 64 else []
                raise self.error(key, "unknown key" + (f" (did you mean {hint[0]!r}?)" if hint else ""))


def _line_of(lines: dict[str, int], path: str) -> int | None:
    """The line of a key path; else of the first key under it (a [[table]] or a dotted header)."""
    if path in lines:
        return lines[path]
    under = [n for k, n in lines.items() if k.startswith((path + ".", path + "["))]
    return min(under) if under else None


def _display(where: str) -> str:
    where = re.sub(r"\[\d+\]", "", where)  # the line number tells which [[connector]]
    head, _, rest = where.partition(".")
    return _short(f"[{head}{'.' + rest if rest else ''}]", 80) if where else "top level"


def _short(text: str, limit: int = 40) -> str:
    """A name or value from the file, cut so that an error stays one readable line."""
    return text if len(text) <= limit else f"{text[:limit - 3]}... ({len(text)} characters)"


_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = 40
_repr.maxlevel, _repr.maxlist, _repr.maxdict = 2, 4, 4


def _echo(value) -> str:
    """A value from the file for an error message: short, and safe for any size or depth."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT:
        return f"an integer of {value.bit_length()} bits"
    return _repr.repr(value)


def _type_name(value) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "an array", dict: "a table"}.get(type(value), type(value).__name__)


def _check(t: _Table, key: str, value, kind, lo, hi, choices, max_len=MAX_STR):
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT:
        raise t.error(key, f"{_echo(value)} is too large" + _range_text(lo, hi, ": expected "))
    if float in kinds and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        want = " or ".join(_type_name(k()) if k in (bool, int, float, str, list, dict) else k.__name__
                           for k in kinds)
        raise t.error(key, f"expected {want}, got {_type_name(value)} {_echo(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise t.error(key, f"expected a finite number, got {value!r}")
    if isinstance(value, str) and len(value) > max_len:
        raise t.error(key, f"longer than {max_len} characters (got {len(value)})")
    if choices is not None and value not in choices:
        raise t.error(key, f"expected one of {', '.join(map(repr, choices))}, got {_echo(value)}")
    if lo is not None and value < lo or hi is not None and value > hi:
        raise t.error(key, f"{_echo(value)}{_range_text(lo, hi)}")
    return value


def _range_text(lo, hi, lead=" ") -> str:
    if lo is not None and hi is not None:
        return f"{lead}out of range {lo}..{hi}"
    if lo is not None:
        return f"{lead}must be at least {lo}"
    return f"{lead}must be at most {hi}" if hi is not None else ""


def load(path: Path | str) -> Config:
    """Read and check the config file; raises ConfigError."""
    path = Path(path)
    try:
        # O_NONBLOCK: a FIFO (or a device) must not hang the open; fstat then refuses it
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        with os.fdopen(fd, "rb") as file:
            if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
                raise ConfigError(path, None, "", "not a regular file")
            raw = file.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(path, None, "", f"cannot read: {exc.strerror or exc}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError(path, None, "", f"larger than {MAX_FILE_BYTES >> 20} MiB: not a config file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _not_utf8(path, raw, exc) from None
    return parse(text, path)


def _not_utf8(path: Path, raw: bytes, exc: UnicodeDecodeError) -> ConfigError:
    """The line of the first bad byte, and the [table] key written on it where one is."""
    number = raw.count(b"\n", 0, exc.start) + 1
    column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
    lines = raw.decode("utf-8", "replace").splitlines()
    text = lines[number - 1] if number <= len(lines) else ""
    key = text.split("=", 1)[0].strip() if "=" in text else ""
    header = next((line.strip() for line in reversed(lines[:number - 1]) if line.strip().startswith("[")), "")
    where = " ".join(part for part in (header.strip("[] ") and f"[{header.strip('[] ')}]", key) if part)
    return ConfigError(path, number, where[:200], f"not UTF-8 text: byte 0x{raw[exc.start]:02x} at column {column}")


def parse(text: str, path: Path | str = "<config>") -> Config:
    path = Path(path)
    too_much = beyond_limits(text)
    if too_much is not None:  # tomllib would recurse or raise on these, without a line
        at, parts, problem = too_much
        where = _display(".".join(parts[:-1])) if len(parts) > 1 else "top level"
        raise ConfigError(path, at, f"{where} {_short(parts[-1])}" if parts else "", problem)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        line = None
        if "(at line " in msg:
            line = int(msg.split("(at line ")[1].split(",")[0])
            msg = msg.split(" (at line ")[0]
        elif "at end of document" in msg:
            line = _unclosed_line(text)
        raise ConfigError(path, line, "", f"TOML syntax: {_short(msg, 200)}") from None
    except (RecursionError, ValueError, OverflowError, MemoryError) as exc:  # past the checks above
        raise ConfigError(path, None, "", f"TOML cannot be read: {type(exc).__name__}") from None
    return build(data, path, key_lines(text))


def _unclosed_line(text: str, tries: int = 200) -> int | None:
    """tomllib says only "at end of document" for an array, table or string left open: the line
    it opens on is the one after the longest prefix that still parses (looked for from the end)."""
    lines = text.splitlines(keepends=True)
    for keep in range(len(lines) - 1, max(-1, len(lines) - 1 - tries), -1):
        try:
            tomllib.loads("".join(lines[:keep]))
        except tomllib.TOMLDecodeError:
            continue
        return keep + 1
    return None


def build(data: dict, path: Path | str, lines: dict[str, int] | None = None) -> Config:
    """The Config from already-parsed TOML data (lines: key paths -> line numbers)."""
    path = Path(path)
    top = _Table(path, lines or {}, data, "")
    charger = _charger(top)
    connectors = _connectors(top, charger)
    rfid_table = top.table("rfid")
    rfid = _device(rfid_table, "rfid") if rfid_table else None
    cards = _cards(top)
    sections = {}
    for name in SERVICE_SECTIONS + OPS_SECTIONS:
        table = top.table(name)
        if table is not None:
            sections[name] = Section(path, name, MappingProxyType(table.data), MappingProxyType(top.lines))
    timing = _timing(top)
    config = Config(path, charger, connectors, rfid, cards, timing, _store(top), _log(top),
                    _simulator(top), _site(top, charger, timing), _authorization(top), tariff_config.parse(top),
                    sections=MappingProxyType(sections),
                    policy=policy_config.parse(top, charger.timezone, charger.unsynced_clock,
                                               {c.group for c in cards if c.group}, charger.phases),
                    control=_control(top))
    top.done()
    _pins_used_once(top)
    _openevse_agrees(top, config)
    _heartbeat_fits_dropout(top, config)
    _modes_served(top, config)
    return config


def _modes_served(top: _Table, config: Config) -> None:
    """Every place that sets a mode ([charger], a [[group]], a mode [[window]]) names one the
    charger can follow; the `mode` command refuses the others with the same words."""
    served = policy_config.modes_served(config.site.meter is not None)
    places = [("charger", top.data.get("charger"))]
    places += [(f"{kind}[{i}]", item) for kind in ("group", "window")
               for i, item in enumerate(top.data.get(kind) or [])]
    for where, table in places:
        mode = table.get("mode") if isinstance(table, dict) else None
        if mode is not None and mode not in served:
            raise _Table(top.path, top.lines, {}, where).error("mode", f"{mode} {policy_config.NEEDS_SITE_METER}")


def _openevse_agrees(top: _Table, config: Config) -> None:
    """The devices of one OpenEVSE board share its link, so their link options must agree; and
    the board's relay grace must end before the core would call the contactor mismatched."""
    seen: dict[str, tuple[int, str, Device]] = {}
    for index, conn in enumerate(config.connectors):
        for kind in ("pilot", "contactor", "rcd", "meter"):
            device = getattr(conn, kind)
            if device is None or device.backend != "openevse":
                continue
            t = _Table(top.path, top.lines, {}, f"connector[{index}].{kind}")
            if device.options["relay_grace_s"] >= config.timing.contactor_settle_s:
                raise t.error("relay_grace_s", f"{device.options['relay_grace_s']:g} s must be below [timing] "
                                               f"contactor_settle_s ({config.timing.contactor_settle_s:g} s)")
            first = seen.setdefault(device.options["port"], (index, kind, device))
            differ = [k for k, v in device.options.items() if first[2].options.get(k) != v]
            if differ:
                raise t.error(differ[0], f"{device.options[differ[0]]!r} differs from [connector.{first[1]}] on the "
                                         f"same board ({first[2].options[differ[0]]!r}): one link, one setting")


def _heartbeat_fits_dropout(top: _Table, config: Config) -> None:
    """A contactor behind a drop-out circuit needs MIN_EDGES_PER_DROPOUT heartbeat edges within
    dropout_s, or a loop a little late drops the relay under load; said at load, with its line."""
    for index, conn in enumerate(config.connectors):
        device = conn.contactor
        if device is None:
            continue
        o = device.options
        if not (o.get("heartbeat_pin") is not None or o.get("heartbeat")) or "dropout_s" not in o:
            continue
        if o["dropout_s"] * o["heartbeat_hz"] >= MIN_EDGES_PER_DROPOUT:
            continue
        t = _Table(top.path, top.lines, {}, f"connector[{index}].contactor")
        given = top.data["connector"][index]["contactor"]
        key = next((k for k in ("heartbeat_hz", "dropout_s", "heartbeat_pin", "heartbeat") if k in given), "backend")
        need_hz = MIN_EDGES_PER_DROPOUT / o["dropout_s"]
        advice = [f"heartbeat_hz to at least {need_hz:g}"] if need_hz <= 50 else []
        if MIN_EDGES_PER_DROPOUT / o["heartbeat_hz"] <= 2.0:
            advice.append(f"dropout_s (and the circuit's R*C) to at least {MIN_EDGES_PER_DROPOUT / o['heartbeat_hz']:g} s")
        raise t.error(key, f"dropout_s = {o['dropout_s']:g} s with heartbeat_hz = {o['heartbeat_hz']:g} leaves fewer "
                           f"than {MIN_EDGES_PER_DROPOUT} heartbeat edges per drop-out: raise " + " or ".join(advice))


def _pins_used_once(top: _Table) -> None:
    """A GPIO pin drives or reads one thing: a second use is an error at its own line (the devices
    would only fail when they open, or worse, fight over the pin)."""
    tables: list[tuple[str, Any]] = [(f"connector[{i}].{kind}", c.get(kind))
                                     for i, c in enumerate(top.data.get("connector", []))
                                     for kind in ("pilot", "contactor", "rcd", "meter") if isinstance(c, dict)]
    tables += [("rfid", top.data.get("rfid"))]
    site = top.data.get("site")
    if isinstance(site, dict):
        tables += [(f"site.{k}", site.get(k)) for k in ("meter", "input")]
    seen: dict[int, tuple[str, str]] = {}
    for where, table in tables:
        if not isinstance(table, dict) or table.get("backend") not in ("gpio", "rc522"):
            continue
        for key, value in table.items():
            if (key == "pin" or key.endswith("_pin")) and isinstance(value, int) and not isinstance(value, bool):
                if value in seen:
                    t = _Table(top.path, top.lines, table, where)
                    first_where, first_key = seen[value]
                    raise t.error(key, f"GPIO {value} is already used by {_display(first_where)} {first_key}")
                seen[value] = (where, key)


def _charger(top: _Table) -> ChargerConfig:
    t = top.table("charger") or _Table(top.path, top.lines, {}, "charger")
    d = ChargerConfig()
    tz = t.get("timezone", str, d.timezone)
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise t.error("timezone", f"unknown time zone {tz!r}") from None
    c = ChargerConfig(
        id=t.get("id", str, d.id, max_len=48),  # OCPP 2.0.1 limits the identity to 48
        phases=t.get("phases", int, d.phases, choices=(1, 3)),
        max_current_a=t.get("max_current_a", float, d.max_current_a, min=6, max=80),
        voltage_v=t.get("voltage_v", float, d.voltage_v, min=100, max=480), timezone=tz,
        free_vend=t.get("free_vend", bool, d.free_vend),
        free_vend_id_tag=t.get("free_vend_id_tag", str, d.free_vend_id_tag, max_len=20),  # OCPP idTag
        ventilation=t.get("ventilation", bool, d.ventilation),
        mode=t.get("mode", str, d.mode, choices=policy_config.MODES),
        unsynced_clock=t.get("unsynced_clock", str, d.unsynced_clock, choices=("ignore", "forbid", "apply")),
        free_vend_group=t.get("free_vend_group", str, d.free_vend_group, max_len=64))
    t.done()
    return c


def _connectors(top: _Table, charger: ChargerConfig) -> tuple[ConnectorConfig, ...]:
    top.used.add("connector")
    raw = top.data.get("connector", [{}])
    if not isinstance(raw, list) or not raw:
        raise top.error("connector", "expected [[connector]] tables")
    out: list[ConnectorConfig] = []
    seen: dict[int, int | None] = {}  # connector id -> line of its id key
    for index, item in enumerate(raw):
        if not isinstance(item, dict):
            raise top.error("connector", f"expected [[connector]] tables, got {_type_name(item)} {_echo(item)}")
        t = _Table(top.path, top.lines, item, f"connector[{index}]")
        cable = t.get("cable_a", (float, str), "socket")
        if isinstance(cable, str):
            if cable != "socket":
                raise t.error("cable_a", f"expected a rating in A or \"socket\", got {cable!r}")
            cable = charger.max_current_a
        elif not 6 <= cable <= 80:
            raise t.error("cable_a", f"{_echo(cable)} out of range 6..80")
        pilot, contactor = t.table("pilot"), t.table("contactor")
        rcd, meter = t.table("rcd"), t.table("meter")
        conn = ConnectorConfig(
            id=t.get("id", int, index + 1, min=1, max=99), cable_a=cable,
            pilot=_device(_required(t, pilot, "pilot"), "pilot"),
            contactor=_device(_required(t, contactor, "contactor"), "contactor"),
            rcd=_device(rcd, "rcd") if rcd else None, meter=_device(meter, "meter") if meter else None,
            socket=t.data.get("cable_a", "socket") == "socket", priority=t.get("priority", int, 0, min=0, max=99),
            breaker_a=t.get("breaker_a", float, None, min=6, max=1000),
            phases=phase_list(t, charger.phases))
        t.done()
        if conn.id in seen:
            first = seen[conn.id]
            raise t.error("id", f"connector id {conn.id} is used twice" + (f" (also at line {first})" if first else ""))
        seen[conn.id] = t.line("id")
        out.append(conn)
    return tuple(out)


def phase_list(t: _Table, supply_phases: int, key: str = "phases") -> tuple[int, ...] | None:
    """A known vehicle's phases: a list of 1..3 (1 = L1), each once; only [1] on a one-phase supply."""
    raw = t.get(key, list, None)
    if raw is None:
        return None
    if not raw or len(raw) > 3 or len(set(raw)) != len(raw) or not all(
            isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= 3 for n in raw):
        raise t.error(key, f"expected a list of phases 1..3 (1 = L1), each once, got {_echo(raw)}")
    if supply_phases == 1 and raw != [1]:
        raise t.error(key, "a one-phase charger ([charger] phases = 1) has only phase [1]")
    return tuple(sorted(raw))


def _required(parent: _Table, table: _Table | None, key: str) -> _Table:
    # No default backend for what switches mains: a forgotten table must not mean "simulator".
    if table is None:
        raise parent.error(key, f"missing (required): [{_display(parent.where)[1:-1]}.{key}] with a backend")
    return table


def _device(t: _Table, kind: str) -> Device:
    name = t.get("backend", str, choices=tuple(backends.names(kind)))
    spec = backends.BACKENDS[(kind, name)]  # the name is one of backends.names(kind)
    options = {key: t.get(key, opt.type, opt.default, min=opt.min, max=opt.max, choices=opt.choices)
               for key, opt in spec.options.items()}
    t.done()
    return Device(name, MappingProxyType(options))


def _cards(top: _Table) -> tuple[Card, ...]:
    top.used.add("card")
    raw = top.data.get("card", [])
    if not isinstance(raw, list):
        raise top.error("card", "expected [[card]] tables")
    cards, seen = [], {}
    for index, item in enumerate(raw):
        if not isinstance(item, dict):
            raise top.error("card", f"expected [[card]] tables, got {_type_name(item)} {_echo(item)}")
        t = _Table(top.path, top.lines, item, f"card[{index}]")
        uid_text = t.get("uid", str, max_len=64)
        try:
            uid = canonical_uid(uid_text)
        except ValueError:
            raise t.error("uid", f"not a hex card UID: {_echo(uid_text)}") from None
        if len(uid) > UID_HEX_MAX:
            raise t.error("uid", f"{len(uid)} hex digits, at most {UID_HEX_MAX} (a 10-byte UID)")
        if uid in seen:
            raise t.error("uid", f"card {uid} is listed twice")
        seen[uid] = index
        expires = t.get("expires", (dt.date, dt.datetime), None)
        card = Card(uid=uid, name=t.get("name", str, "", max_len=100), group=t.get("group", str, "", max_len=64),
                    expires=expires.date() if isinstance(expires, dt.datetime) else expires,
                    enabled=t.get("enabled", bool, True))
        t.done()
        cards.append(card)
    return tuple(cards)


def _timing(top: _Table) -> Timing:
    t = top.table("timing") or _Table(top.path, top.lines, {}, "timing")
    d = Timing()
    timing = Timing(
        auth_timeout_s=t.get("auth_timeout_s", float, d.auth_timeout_s, min=5, max=3600),
        stop_grace_s=t.get("stop_grace_s", float, d.stop_grace_s, min=1, max=10),
        current_change_grace_s=t.get("current_change_grace_s", float, d.current_change_grace_s, min=5, max=30),
        rcd_retry_s=t.get("rcd_retry_s", float, d.rcd_retry_s, min=10, max=3600),
        rcd_max_retries=t.get("rcd_max_retries", int, d.rcd_max_retries, min=0, max=20),
        contactor_settle_s=t.get("contactor_settle_s", float, d.contactor_settle_s, min=0.02, max=5),
        pilot_poll_s=t.get("pilot_poll_s", float, d.pilot_poll_s, min=0.005, max=0.1),
        pilot_lost_s=t.get("pilot_lost_s", float, d.pilot_lost_s, min=0.02, max=1),
        meter_interval_s=t.get("meter_interval_s", float, d.meter_interval_s, min=0.2, max=60),
        meter_timeout_s=t.get("meter_timeout_s", float, d.meter_timeout_s, min=1, max=300),
        wakeup_after_s=t.get("wakeup_after_s", float, d.wakeup_after_s, min=0, max=600),
        min_pause_s=t.get("min_pause_s", float, d.min_pause_s, min=0, max=3600),
        card_repeat_s=t.get("card_repeat_s", float, d.card_repeat_s, min=0, max=10))
    t.done()
    if timing.pilot_lost_s < 2 * timing.pilot_poll_s:
        raise t.error("pilot_lost_s", "must be at least twice pilot_poll_s")
    # A silent meter pauses PWM stop_grace_s before meter_timeout_s: leave two readings before that.
    if timing.meter_timeout_s < timing.stop_grace_s + 2 * timing.meter_interval_s:
        raise t.error("meter_timeout_s", f"must be at least stop_grace_s + 2 x meter_interval_s "
                      f"({timing.stop_grace_s + 2 * timing.meter_interval_s:g} s)")
    return timing


def _store(top: _Table) -> StoreConfig:
    t = top.table("store") or _Table(top.path, top.lines, {}, "store")
    system = is_system(top.path)  # the installed service's config: its directories for every reader
    store = StoreConfig(
        state_dir=_dir(t, "state_dir", lambda: default_state_dir(system)),
        runtime_dir=_dir(t, "runtime_dir", lambda: default_runtime_dir(system), socket=True),
        checkpoint_s=t.get("checkpoint_s", float, 60.0, min=1, max=3600),
        sample_interval_s=t.get("sample_interval_s", float, 10.0, min=1, max=3600),
        sample_retention_days=t.get("sample_retention_days", int, 400, min=1, max=36_500))
    t.done()
    return store


def _dir(t: _Table, key: str, default, socket: bool = False) -> Path:
    """A directory the daemon will use, refused here (so `check` and `run` agree) when it is a
    file, under a kernel file system, or too long for the control socket."""
    text = t.get(key, str, "", max_len=dirs.PATH_MAX)
    path = configured_dir(t.path, text) if text else default()
    problem = dirs.path_problem(path, socket=socket)
    if problem is not None:
        raise t.error(key, problem if text else f"the default {dirs._short(path)}: {problem}")
    return path


def _site(top: _Table, charger: ChargerConfig, timing: Timing) -> SiteConfig:
    t = top.table("site")
    if t is None:
        return SiteConfig()
    meter = t.table("meter")
    site = SiteConfig(meter=_device(meter, "meter") if meter else None,
                      load=policy_config.parse_site(t, charger.voltage_v, timing))
    t.done()
    return site


def _authorization(top: _Table) -> AuthConfig:
    t = top.table("authorization") or _Table(top.path, top.lines, {}, "authorization")
    d = AuthConfig()
    auth = AuthConfig(timeout_s=t.get("timeout_s", float, d.timeout_s, min=0.5, max=60),
                      unanswered=t.get("unanswered", str, d.unanswered, choices=("reject", "accept")))
    t.done()
    return auth


def _control(top: _Table) -> ControlConfig:
    t = top.table("control") or _Table(top.path, top.lines, {}, "control")
    d = ControlConfig()
    users = {key: t.get(key, str, getattr(d, key), max_len=32) for key in ("ocpp_user", "web_user", "mqtt_user",
                                                                        "prices_user")}
    for key, user in users.items():
        if user in ("root", "0", dirs.DAEMON_USER):
            raise t.error(key, f"{user!r}: a network service never runs as root or as the daemon's user")
    t.done()
    mqtt = top.table("mqtt")  # the MQTT service checks the rest of its table; the grant is the daemon's to read
    restart = mqtt.get("restart_button", bool, False) if mqtt is not None else False
    return ControlConfig(**users, mqtt_restart=restart)


def _log(top: _Table) -> LogConfig:
    t = top.table("log") or _Table(top.path, top.lines, {}, "log")
    log = LogConfig(level=t.get("level", str, "info", choices=("debug", "info", "warning", "error")),
                    format=t.get("format", str, "auto", choices=("auto", "text", "json")))
    t.done()
    return log


def _simulator(top: _Table) -> SimulatorConfig:
    t = top.table("simulator") or _Table(top.path, top.lines, {}, "simulator")
    d = SimulatorConfig()
    sim = SimulatorConfig(
        ev_max_current_a=t.get("ev_max_current_a", float, d.ev_max_current_a, min=0, max=80),
        ev_phases=t.get("ev_phases", int, d.ev_phases, choices=(1, 2, 3)),
        voltage_v=t.get("voltage_v", float, d.voltage_v, min=100, max=480),
        meter_start_wh=t.get("meter_start_wh", int, d.meter_start_wh, min=0, max=10**12))
    t.done()
    return sim


Table = _Table  # for the services' parsers of their own sections
