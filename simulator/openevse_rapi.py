"""An OpenEVSE board emulator speaking RAPI on the master side of a pty, for tests and demos.

Behaviour follows the firmware (open_evse 8.2.x: J1772EvseController.cpp, Gfi.cpp, EnergyMeter.cpp,
rapi_proc.cpp); the code is ours. Standard library only, no evsed. Time is virtual: advance().
"""

from __future__ import annotations

from simulator.rapi_wire import RapiPty

# EVSE states as the firmware numbers them (J1772EvseController.h)
STATE_UNKNOWN, STATE_A, STATE_B, STATE_C, STATE_D = 0x00, 0x01, 0x02, 0x03, 0x04
DIODE_CHECK_FAILED, GFCI_FAULT, NO_GROUND, STUCK_RELAY = 0x05, 0x06, 0x07, 0x08
GFI_TEST_FAILED, OVER_TEMPERATURE, OVER_CURRENT, RELAY_CLOSURE_FAULT = 0x09, 0x0A, 0x0B, 0x0E
SLEEPING, DISABLED = 0xFE, 0xFF
FAULT_STATES = (DIODE_CHECK_FAILED, GFCI_FAULT, NO_GROUND, STUCK_RELAY, GFI_TEST_FAILED,
                OVER_TEMPERATURE, OVER_CURRENT, RELAY_CLOSURE_FAULT)
# volatile flags (m_wVFlags)
VF_AUTH_LOCKED, VF_CHARGING_ON, VF_GFI_TRIPPED, VF_EV_CONNECTED = 0x0008, 0x0040, 0x0080, 0x0100
VF_BOOT_LOCK = 0x4000  # ECVF_BOOT_LOCK: waiting in setup() for $SB (BOOTLOCK builds)
# settings flags (m_wFlags, EEPROM), as $GE reports them
ECF_DIODE_CHK_DISABLED, ECF_GND_CHK_DISABLED, ECF_GFI_TEST_DISABLED = 0x0002, 0x0008, 0x0200
_AT_TEST = VF_AUTH_LOCKED | VF_EV_CONNECTED  # ECVF_CHANGED_TEST: vflag changes that send an $AT

GFI_TIMEOUT_S = 300.0  # open_evse.h GFI_TIMEOUT: the board retries a GFCI trip after 5 min
SLEEP_RELAY_TIMEOUT_S = 3.0  # Update(): asleep, the relay opens when the EV lets go, or after 3 s
HS_ACK_COOKIE = 165  # $SY 165 acknowledges a missed heartbeat
FIRMWARE = "8.2.3"

_EV_CODES = {"A": STATE_A, "B": STATE_B, "C": STATE_C, "D": STATE_D}


class OpenEvseEmulator(RapiPty):
    """One board. current_a is the capacity stored in EEPROM (what the board boots with and the
    ceiling of a volatile $SC), max_current_a the hardware maximum. auth_lock: None for firmware
    built without AUTH_LOCK (the stock builds: $S4/$G4 refused), else the lock at boot.

    boot_lock: built with BOOTLOCK, as the 8.2.3 release builds were (platformio.ini's common flags
    from 2023-02-06 until 2025-01-07): after every boot setup() waits for $SB, answering RAPI but
    never running Update(), so the EV is not seen; $GS shows state 00 and vflag 4000. Default:
    locked, except with legacy_state (firmware from before vflags had no BOOTLOCK either).
    heartbeat: built with HEARTBEAT_SUPERVISION ($SY/$GY). flags: the EEPROM settings $GE shows.

    Test hooks: those of the wire (simulator.rapi_wire.RapiPty), and quiet (send no $AT).
    """

    def __init__(self, *, current_a: int = 16, min_current_a: int = 6, max_current_a: int = 40,
                 voltage_mv: int = 240_000, total_wh: int = 0, ammeter: bool = True,
                 volatile_supported: bool = True, legacy_async: bool = False, legacy_state: bool = False,
                 auth_lock: bool | None = None, heartbeat: bool = True, boot_lock: bool | None = None,
                 flags: int = 0x0000):
        self.eeprom_current_a, self.min_current_a, self.max_current_a = current_a, min_current_a, max_current_a
        self.voltage_mv, self.total_wh = voltage_mv, total_wh
        self.ammeter, self.volatile_supported, self.heartbeat = ammeter, volatile_supported, heartbeat
        self.legacy_async, self.legacy_state = legacy_async, legacy_state  # $ST / two-field $GS
        self.auth_lock_default = auth_lock
        # BOOTLOCK came with 8.2.x, whose $GS has vflags: a legacy emulator has no boot lock
        self.boot_lock_build = (not legacy_state) if boot_lock is None else boot_lock
        self.flags = flags
        self.now_s = 0.0
        self.ev = "A"
        self.ev_max_current_a = 32.0
        self.gfi_pin = False  # the GFCI sensor's output: high while leakage flows
        self.fault: int | None = None  # a fault state forced by the test (other than the GFCI's)
        self.gfi_trip_count = self.gfi_retries = 0
        self.eeprom_writes = 0  # $SC without V: EEPROM wear (and the stored maximum changed)
        self.hs_writes = 0  # $SY settings that changed what EEPROM holds
        self.hs_interval_s, self.hs_current_a = 0, 0  # kept in EEPROM
        self.quiet = False  # no async notifications: an $AT lost on the line
        self._sent: tuple | None = None
        super().__init__()
        self._boot()

    def _boot(self) -> None:
        """What survives a reset is in EEPROM; the rest starts afresh (Init(), EnergyMeter)."""
        self.mode = "enabled"  # a board boots enabled: steady +12 V until an EV arrives
        self.boot_locked = self.boot_lock_build  # Init() sets ECVF_BOOT_LOCK; setup() waits for $SB
        self.current_a = max(self.min_current_a, min(self.eeprom_current_a, self.max_current_a))
        self.locked = bool(self.auth_lock_default)
        self.evse_state = self.pilot_state = STATE_UNKNOWN
        self.relay_closed = self.pwm_on = False
        self.relay_since_s = 0.0
        self.gfi_latched, self.gfi_fault_since_s = self.gfi_pin, 0.0
        self.gfi_tripped_flag = False
        self.ev_connected = False
        self.session_ws, self.in_session = 0, False
        self.hs_trigger, self.hs_last_pulse_s = 0, self.now_s

    def _ready(self) -> None:
        """The board has been running before anyone listens: nothing to announce."""
        self._update()
        self._sent = self._snapshot()

    def reboot(self, announce: bool = True) -> None:
        """A watchdog reset or brown-out; announce=False: the $AB is lost on the line.

        Init() forces an $AT out (state 00), then sends $AB; a BOOTLOCK build then waits for $SB."""
        with self._lock:
            self._boot()
            self._sent = None
            if announce and self.listening:
                self.send_frame(f"$AT {STATE_UNKNOWN:02x} {STATE_UNKNOWN:02x} {self.current_a} {self.vflags:04x}")
                self.send_frame(f"$AB 00 {FIRMWARE}")
            self._update()
            self._notify()

    # --- what the test drives ---------------------------------------------------------------------

    def set_ev(self, state: str) -> None:
        """The simulated EV's state: 'A' unplugged, 'B' plugged, 'C' requests power, 'D' with ventilation."""
        with self._lock:
            self.ev = state
            self._update()
            self._notify()

    def set_fault(self, state: int | None) -> None:
        """A GFCI trip (GFCI_FAULT: a leakage pulse that latches) or another fault state; None clears
        the forced fault (a GFCI latch stays until the board resets it, as Gfi.cpp does)."""
        with self._lock:
            if state == GFCI_FAULT:
                self.gfi_trip()
            else:
                self.fault = state
                self._update()
                self._notify()

    def gfi_trip(self, persists: bool = False) -> None:
        """gfi_isr(): the relay opens and the fault latches, asleep or not; persists: leakage goes on."""
        with self._lock:
            self.gfi_pin = persists
            self.gfi_latched = self.gfi_tripped_flag = True
            self.relay_closed = False
            self._update()
            self._notify()

    def press_button(self) -> None:
        """A short press of the front button while enabled: the board goes to sleep."""
        with self._lock:
            self._sleep()
            self._notify()

    def advance(self, seconds: float) -> None:
        """Let virtual time pass: the EV draws while the relay is closed; the board's timers run."""
        with self._lock:
            if self.relay_closed and self.in_session:
                self.session_ws += round(self.voltage_mv / 1000 * self.charging_current_a * seconds)
            self.now_s += seconds
            self._update()
            self._notify()

    # --- the board's state as the firmware keeps it -----------------------------------------------

    @property
    def charging_current_a(self) -> float:
        return min(self.current_a, self.ev_max_current_a) if self.relay_closed and self.ev in "CD" else 0.0

    @property
    def vflags(self) -> int:
        flags = VF_CHARGING_ON if self.relay_closed else 0
        flags |= VF_EV_CONNECTED if self.ev_connected else 0
        flags |= VF_AUTH_LOCKED if self.locked else 0
        flags |= VF_BOOT_LOCK if self.boot_locked else 0
        return flags | (VF_GFI_TRIPPED if self.gfi_tripped_flag else 0)

    def _sleep(self) -> None:
        if self.evse_state != SLEEPING:  # Sleep(): steady +12 V; the relay waits for the EV in Update()
            self.mode, self.evse_state, self.relay_since_s = "sleeping", SLEEPING, self.now_s
            self.pwm_on = False

    def _update(self) -> None:
        """J1772EVSEController::Update(), without the debounce; run until the state settles.
        Boot-locked, loop() has not started: nothing is updated."""
        if self.boot_locked:
            return
        for _ in range(3):
            before = (self.evse_state, self.pwm_on, self.relay_closed)
            self._update_once()
            if (self.evse_state, self.pwm_on, self.relay_closed) == before:
                return

    def _update_once(self) -> None:
        if self.mode == "disabled":
            return  # the pilot is at -12 V: not even the EV connection is read
        self.ev_connected = self.ev != "A"  # ReadPilot()
        if self.ev_connected and not self.in_session:
            self.in_session, self.session_ws = True, 0  # EnergyMeter: a session starts on connect
        elif not self.ev_connected and self.in_session:
            self._end_session()
        if self.mode == "sleeping":
            if self.relay_closed and (self.ev not in "CD" or self.now_s - self.relay_since_s >= SLEEP_RELAY_TIMEOUT_S):
                self.relay_closed = False
            return  # the early return: evse_state and pilot_state keep their values from before
        self._heartbeat_check()
        previous = self.evse_state
        if self.gfi_latched:
            self.relay_closed = self.pwm_on = False
            if previous != GFCI_FAULT:  # a transition into the fault counts a trip, retry timer afresh
                self.gfi_trip_count += 1
                self.gfi_retries, self.gfi_fault_since_s = 0, self.now_s
                self.evse_state = GFCI_FAULT
                return
            if not self.ev_connected:
                self.gfi_latched = self.gfi_pin  # Gfi::Reset() on unplug
            elif self.now_s - self.gfi_fault_since_s >= GFI_TIMEOUT_S:
                self.gfi_retries += 1  # Gfi::Reset() after GFI_TIMEOUT: latched again if leakage goes on
                self.gfi_latched, self.gfi_fault_since_s = self.gfi_pin, self.now_s
            if self.gfi_latched:
                return
        if self.fault is not None:
            self.evse_state, self.relay_closed, self.pwm_on = self.fault, False, False
            return
        if previous in FAULT_STATES:
            previous = self.evse_state = STATE_UNKNOWN  # out of the fault: evaluated afresh
        level = _EV_CODES[self.ev]
        self.pilot_state = level
        state = level if level != STATE_C or self.pwm_on else STATE_B  # no PWM: cannot charge
        if self.locked and state == STATE_C:
            state = STATE_B  # AUTH_LOCK: held out of C until unlocked
        self._transition(state, force=state != previous)

    def _transition(self, state: int, force: bool) -> None:
        """Update()'s state transition: the pilot output and the relay for the new state."""
        self.evse_state = state
        if not force:
            return
        if state == STATE_A:
            self.relay_closed = self.pwm_on = False
            if self.auth_lock_default is not None:
                self.locked = bool(self.auth_lock_default)  # AUTH_LOCK 1 locks again on every unplug
        elif state == STATE_B:
            self.relay_closed, self.pwm_on = False, not self.locked
        elif state in (STATE_C, STATE_D):
            self.pwm_on = True
            if not self.relay_closed:
                self.relay_closed, self.relay_since_s = True, self.now_s

    def _end_session(self) -> None:
        self.in_session = False
        self.total_wh += self.session_ws // 3600  # session_ws is kept until the next session starts

    def _heartbeat_check(self) -> None:
        """HsExpirationCheck(); interval * 1000 is 16-bit unsigned arithmetic on the AVR."""
        interval_ms = (self.hs_interval_s * 1000) & 0xFFFF
        if self.hs_interval_s and (self.now_s - self.hs_last_pulse_s) * 1000 > interval_ms:
            if self.hs_current_a < self.current_a:
                self.current_a = max(self.min_current_a, self.hs_current_a)  # SetCurrentCapacity clamps to 6 A
            self.hs_trigger, self.hs_last_pulse_s = 2, self.now_s

    def _snapshot(self) -> tuple:
        return (self.evse_state, self.pilot_state, self.current_a, self.vflags & _AT_TEST)

    def _notify(self) -> None:
        """RapiSendEvseState(): an $AT when state, pilot state, capacity or a test flag changed."""
        if not self.listening or self.evse_state == STATE_UNKNOWN or self.quiet:
            return
        now = self._snapshot()
        if now == self._sent:
            return
        self._sent = now
        if self.legacy_async:
            self.send_frame(f"$ST {self.evse_state:02x}")
        else:
            self.send_frame(f"$AT {self.evse_state:02x} {self.pilot_state:02x} {self.current_a} {self.vflags:04x}")

    def _execute(self, name: str, args: list[str]) -> tuple[bool, str]:
        if name == "FE":
            if self.mode != "enabled":  # Enable(): state unknown, evaluated afresh by Update()
                self.mode, self.evse_state, self.pwm_on = "enabled", STATE_UNKNOWN, False
            return True, ""
        if name == "FS":
            self._sleep()
            return True, ""
        if name == "FD":
            self.mode, self.evse_state, self.relay_closed, self.pwm_on = "disabled", DISABLED, False, False
            return True, ""
        if name == "SC" and len(args) in (1, 2):
            return self._set_current(args)
        if name in ("S4", "G4") and self.auth_lock_default is None:
            return False, ""  # built without AUTH_LOCK: no such command
        if name == "S4" and len(args) == 1:  # AuthLock(tf, 1): Update(1) unless in a fault
            self.locked = args[0] != "0"
            if self.mode == "enabled" and self.evse_state not in FAULT_STATES:
                self._update_once()
                self._transition(self.evse_state, force=True)
            return True, ""
        if name == "G4":
            return True, "1" if self.locked else "0"
        if name in ("SY", "GY") and self.heartbeat:
            return self._heartbeat(name, args)
        if name == "SB" and self.boot_lock_build:  # "1": refused in a fault, the lock stays
            if self.evse_state in FAULT_STATES:
                return True, "1"
            self.boot_locked = False
            return True, "0"
        if name == "GE":
            return True, f"{self.current_a} {self.flags:04x}"
        if name == "GS":
            if self.legacy_state:
                return True, f"{self.evse_state:02x} 0"
            return True, f"{self.evse_state:02x} 0 {self.pilot_state:02x} {self.vflags:04x}"
        if name == "GG":
            current_ma = round(self.charging_current_a * 1000) if self.ammeter else -1
            return True, f"{current_ma} {self.voltage_mv}"
        if name == "GU":
            return True, f"{self.session_ws} {self.total_wh}"
        if name == "GC":
            stored = max(self.min_current_a, min(self.eeprom_current_a, self.max_current_a))
            return True, f"{self.min_current_a} {self.max_current_a} {self.current_a} {stored}"
        if name == "GF":
            return True, f"{self.gfi_trip_count:x} 0 0"
        if name == "GV":
            return True, f"{FIRMWARE} 5.2.1"
        if name == "G0":
            return True, "2" if self.mode == "disabled" else ("1" if self.ev_connected else "0")
        return False, ""

    def _set_current(self, args: list[str]) -> tuple[bool, str]:
        """$SC amps [V]: clamped to 6..max; volatile may not exceed the EEPROM value (D5.0.0)."""
        if len(args) == 2 and not self.volatile_supported:
            return False, ""  # firmware before the V flag refuses the extra token
        try:
            wanted = int(args[0])
        except ValueError:
            return False, ""
        ceiling = self.max_current_a
        if len(args) == 2:
            ceiling = max(self.min_current_a, min(self.eeprom_current_a, self.max_current_a))
        self.current_a = max(self.min_current_a, min(wanted, ceiling))
        if len(args) == 1:
            self.eeprom_current_a = self.current_a
            self.eeprom_writes += 1
        return self.current_a == wanted, str(self.current_a)

    def _heartbeat(self, name: str, args: list[str]) -> tuple[bool, str]:
        ok = True
        if name == "SY" and not args:  # a pulse; $NK while a missed pulse is not acknowledged
            ok, self.hs_last_pulse_s = self.hs_trigger != 2, self.now_s
        elif name == "SY" and len(args) == 1:  # the acknowledgement restores the stored capacity
            ok = int(args[0]) == HS_ACK_COOKIE
            if ok and self.hs_trigger == 2:
                self.current_a = max(self.min_current_a, min(self.eeprom_current_a, self.max_current_a))
                self.hs_trigger = 1
        elif name == "SY" and len(args) == 2:
            interval_s, current_a = int(args[0]), int(args[1])
            if (interval_s, current_a) != (self.hs_interval_s, self.hs_current_a):
                self.hs_writes += 1
            self.hs_interval_s, self.hs_current_a = interval_s, current_a
            self.hs_trigger, self.hs_last_pulse_s = 0, self.now_s
        elif name == "SY":
            ok = False
        return ok, f"{self.hs_interval_s} {self.hs_current_a} {self.hs_trigger}"
