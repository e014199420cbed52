"""What an OpenEVSE board says about itself over RAPI, read only: firmware, settings, the features it
was built with, and what evsed can and cannot do with it (for `evsed probe`). Nothing is changed.
"""

from __future__ import annotations

from dataclasses import dataclass

from hal import TryAgain
from hal.rapi import VF_BOOT_LOCK, RapiLink, Refused

# settings flags ($GE, m_wFlags in EEPROM; J1772EvseController.h)
ECF_DIODE_CHK_DISABLED, ECF_VENT_REQ_DISABLED, ECF_GND_CHK_DISABLED = 0x0002, 0x0004, 0x0008
ECF_STUCK_RELAY_CHK_DISABLED, ECF_GFI_TEST_DISABLED = 0x0010, 0x0200
_CHECKS_OFF = ((ECF_DIODE_CHK_DISABLED, "diode check"), (ECF_VENT_REQ_DISABLED, "ventilation check"),
               (ECF_GND_CHK_DISABLED, "ground check"), (ECF_STUCK_RELAY_CHK_DISABLED, "stuck-relay check"),
               (ECF_GFI_TEST_DISABLED, "GFCI self-test"))
TRIES = 2  # a bare $NK may be a bit error: a feature counts as missing after this many in a row


@dataclass(frozen=True)
class BoardInfo:
    """One board as it answered. None: the firmware was built without the feature."""

    firmware: str  # $GV: 8.2.3
    rapi: str  # $GV: 5.2.1
    evse_state: int  # $GS
    vflags: int | None  # $GS (firmware before 2.x: None)
    flags: int | None  # $GE: the EEPROM settings
    current_a: int | None  # $GC: the pilot's capacity now
    stored_max_a: int | None  # $GC: what a volatile $SC cannot exceed
    hw_range_a: tuple[int, int] | None  # $GC: the hardware minimum and maximum
    auth_lock: bool | None  # $G4: locked now; None: built without AUTH_LOCK
    heartbeat: tuple[int, int, int] | None  # $GY: interval s, fallback A, trigger; None: without
    ammeter: bool  # $GG answers a current
    gfi_trips: int | None  # $GF

    @property
    def boot_locked(self) -> bool:
        return self.vflags is not None and bool(self.vflags & VF_BOOT_LOCK)

    @property
    def checks_off(self) -> list[str]:
        """The safety checks its settings have turned off."""
        return [name for bit, name in _CHECKS_OFF if self.flags is not None and self.flags & bit]

    def notes(self) -> list[tuple[str, str]]:
        """(topic, what evsed will and will not be able to do with this board), for people."""
        out = []
        if self.boot_locked:
            out.append(("boot lock", "on (vflag 4000): built with BOOTLOCK, it waits after every boot; "
                                     "evsed sends $SB"))
        else:
            out.append(("boot lock", "off now (built without BOOTLOCK, or unlocked since its boot)"))
        if self.auth_lock is None:
            out.append(("auth lock", "not built (AUTH_LOCK): without an offer evsed puts it to sleep ($FS), "
                                     "and reads only the EV-connected and relay flags then"))
        else:
            now = "locked" if self.auth_lock else "unlocked"
            out.append(("auth lock", f"built ({now} now): without an offer evsed holds it locked, awake"))
        if self.heartbeat is None:
            out.append(("heartbeat", "not built (HEARTBEAT_SUPERVISION): nothing limits the board if evsed "
                                     "or its loop stops"))
        else:
            interval_s, fallback_a, trigger = self.heartbeat
            out.append(("heartbeat", f"supervision {interval_s} s / {fallback_a} A now (trigger {trigger}); "
                                     "evsed sets heartbeat_s and 6 A: if its loop stops, the board falls back to 6 A"))
        if self.stored_max_a is not None:
            hw = f", hardware {self.hw_range_a[0]}-{self.hw_range_a[1]} A" if self.hw_range_a else ""
            out.append(("current", f"{self.current_a} A now, stored maximum {self.stored_max_a} A{hw}: evsed's "
                                   f"volatile $SC can offer at most {self.stored_max_a} A"))
        out.append(("ammeter", "yes: it can be the meter (backend \"openevse\")" if self.ammeter
                    else "none: configure a Modbus meter"))
        if self.flags is not None:
            off = self.checks_off
            out.append(("GFCI self-test", "off in its settings: the board closes without testing its GFCI"
                        if ECF_GFI_TEST_DISABLED & self.flags else "on: tested before every close"))
            out.append(("safety checks", "off: " + ", ".join(off) if off else "all on"))
        if self.gfi_trips:
            out.append(("GFCI trips", f"{self.gfi_trips} counted in its EEPROM"))
        return out


def _ask(link: RapiLink, command: str) -> tuple[str, ...] | None:
    """The answer's values, or None when the board refuses the command TRIES times (not built in)."""
    for attempt in range(TRIES):
        try:
            return link.request(command).args
        except Refused as exc:
            if exc.frame.args:  # a refusal with a value is an answer ($GY while a pulse is missed)
                return exc.frame.args
            if attempt + 1 == TRIES:
                return None
    return None


def _int(values: tuple[str, ...] | None, index: int, base: int = 10) -> int | None:
    try:
        return int(values[index], base) if values is not None else None
    except (IndexError, ValueError):
        return None


def identify(link: RapiLink) -> BoardInfo:
    """Ask a board who it is; TryAgain when nothing answers RAPI on the link."""
    version = _ask(link, "GV")
    if not version:
        raise TryAgain(f"OpenEVSE {link.port}: $GV refused")
    state, settings, capacity = _ask(link, "GS"), _ask(link, "GE"), _ask(link, "GC")
    g4, gy, gg, gf = _ask(link, "G4"), _ask(link, "GY"), _ask(link, "GG"), _ask(link, "GF")
    low, high, current_ma = _int(capacity, 0), _int(capacity, 1), _int(gg, 0)
    heartbeat = (_int(gy, 0) or 0, _int(gy, 1) or 0, _int(gy, 2) or 0) if gy is not None else None
    return BoardInfo(
        firmware=version[0], rapi=version[1] if len(version) > 1 else "",
        evse_state=_int(state, 0, 16) or 0, vflags=_int(state, 3, 16), flags=_int(settings, 1, 16),
        current_a=_int(capacity, 2), stored_max_a=_int(capacity, 3),
        hw_range_a=(low, high) if low is not None and high is not None else None,
        auth_lock=None if g4 is None else g4[:1] == ("1",), heartbeat=heartbeat,
        ammeter=current_ma is not None and current_ma >= 0, gfi_trips=_int(gf, 0, 16))
