"""Energy-meter register maps as data: per model, quantity -> register, function code, type,
scale and word order, each table naming the manufacturer document it was taken from.

Addresses are 0-based, as sent on the wire (a document's "register 3028" is address 3027).
A field's scale turns the raw value into the unit in its quantity's name (kWh -> Wh: 1000).
"""

from __future__ import annotations

from dataclasses import dataclass

# Quantities a model may map; per-phase ones repeat with phase 1..3.
PER_PHASE = ("voltage_v", "current_a", "power_w")
TOTALS = ("power_total_w", "energy_import_wh", "frequency_hz")

# Register type -> (struct format code, registers it spans).
TYPES: dict[str, tuple[str, int]] = {
    "int16": ("h", 1), "uint16": ("H", 1),
    "int32": ("i", 2), "uint32": ("I", 2),
    "int64": ("q", 4), "uint64": ("Q", 4),
    "float32": ("f", 2),
}


@dataclass(frozen=True, slots=True)
class Field:
    """One quantity in one register run. phase is 1..3 for per-phase quantities, 0 for totals."""

    quantity: str
    phase: int
    address: int
    type: str
    scale: float = 1.0

    @property
    def count(self) -> int:
        return TYPES[self.type][1]


@dataclass(frozen=True, slots=True)
class SerialRegister:
    """Where a model keeps its serial number: an unsigned integer (told in decimal, as printed on
    the meter) in the model's word order, and the document that says so."""

    function_code: int
    address: int
    type: str
    source: str

    @property
    def count(self) -> int:
        return TYPES[self.type][1]


@dataclass(frozen=True, slots=True)
class MeterModel:
    """A meter's Modbus map. word_order "big": high word first; "little": low word first.

    not_available_sentinels: the model marks a missing value with the type's all-ones
    (unsigned) or maximum (signed) integer, which decoding turns into NaN.
    baudrate, parity: the serial line as the meter leaves the factory (8 data bits, 1 stop bit);
    the config's baudrate and parity override them. factory: that setting in words ("9600 baud,
    no parity") and where it is stated: the manufacturer's document, version and page; where no
    such page was found, "not confirmed" and, after "secondary:", the best other sources.
    vendor, product: the maker and the model as they name it (OCMF's MV and MM); serial: the
    register holding its serial number, where a document gives one.
    """

    name: str
    title: str
    source: str  # the manufacturer's document the registers come from
    function_code: int  # 3: holding registers, 4: input registers
    word_order: str
    fields: tuple[Field, ...]
    not_available_sentinels: bool = False
    phases: int = 3
    baudrate: int = 9600
    parity: str = "N"
    factory: str = ""
    vendor: str = ""
    product: str = ""
    serial: SerialRegister | None = None

    def quantities(self) -> set[str]:
        return {f.quantity for f in self.fields}


def _phases(quantity: str, addresses: tuple[int, ...], type_: str, scale: float = 1.0) -> tuple[Field, ...]:
    return tuple(Field(quantity, n, a, type_, scale) for n, a in enumerate(addresses, start=1))


def _total(quantity: str, address: int, type_: str, scale: float = 1.0) -> Field:
    return Field(quantity, 0, address, type_, scale)


F32 = "float32"
KWH = 1000.0  # kWh -> Wh
KW = 1000.0  # kW -> W

# --- Eastron: input registers (FC4), IEEE 754 float32, high word first, energy in kWh ---------

_SDM_1P = (
    _phases("voltage_v", (0x0000,), F32) + _phases("current_a", (0x0006,), F32)
    + _phases("power_w", (0x000C,), F32)
    + (_total("power_total_w", 0x000C, F32), _total("frequency_hz", 0x0046, F32),
       _total("energy_import_wh", 0x0048, F32, KWH)))

_SDM_3P = (
    _phases("voltage_v", (0x0000, 0x0002, 0x0004), F32)
    + _phases("current_a", (0x0006, 0x0008, 0x000A), F32)
    + _phases("power_w", (0x000C, 0x000E, 0x0010), F32)
    + (_total("power_total_w", 0x0034, F32), _total("frequency_hz", 0x0046, F32),
       _total("energy_import_wh", 0x0048, F32, KWH)))

# Every SDM model keeps its serial number in holding registers FC00h-FC01h (FC3, though the readings
# are input registers), an unsigned 32-bit integer, high word first.
SDM_SERIAL = SerialRegister(
    3, 0xFC00, "uint32",
    "holding registers FC00h-FC01h, serial number; not read off an Eastron manual page here. "
    "Secondary: SDM.h of ESPEasy's SDM_Energy_Meter library (SDM_HOLDING_SERIAL_NUMBER 0xFC00, read "
    "as one big-endian 32-bit integer, one constant for the SDM72, 120, 220, 230 and 630)")

# Not confirmed from a manual here: the value is the one the other sources agree on (or, where
# none states it, the usual 9600 8N1), kept until a manufacturer's page says otherwise.
# `evsed probe` finds what a meter really answers at and writes it out.
UNCONFIRMED = "factory serial setting not confirmed from the manual (no page found): "

SDM120 = MeterModel(
    "sdm120", "Eastron SDM120-Modbus (single phase)",
    "Eastron SDM120Modbus Smart Meter Modbus Protocol Implementation V2.4, input register table (p.6)",
    4, "big", _SDM_1P, phases=1, baudrate=2400,
    factory="2400 baud, no parity: Eastron SDM120Modbus Smart Meter Modbus Protocol Implementation V2.4 "
            "p.7, holding register 40019 (0 = one stop bit and no parity, default) and 40029 "
            "(0 = 2400 baud, default); the MID sibling's Eastron SDM120M User Manual V2.9 agrees: p.3 "
            "(baud rate default 2400), p.5-6 (set-up screens: 2400 bps, parity none) and p.10 (the same "
            "two registers); PDF pages, which are the printed ones in the protocol",
    vendor="Eastron", product="SDM120-Modbus", serial=SDM_SERIAL)

SDM230 = MeterModel(
    "sdm230", "Eastron SDM230-Modbus (single phase)",
    "Eastron SDM230-Modbus, Modbus Protocol Implementation (SDM230-register), "
    "input register table",
    4, "big", _SDM_1P, phases=1,
    factory=UNCONFIRMED + "9600 baud, no parity. Eastron's SDM230Modbus Protocol V1.2 and V1.4 were "
            "found but only their first pages read; secondary: Tasmota's SDM230 driver (SDM230_SPEED 9600, "
            "'default SDM230 Modbus baudrate', citing Eastron Europe's Correct_SDM230_Protocol). The sources "
            "disagree on the baud rate: SDM.h of ESPEasy's SDM_Energy_Meter library gives the SDM230 the "
            "SDM120's 2400 baud default (and no parity), a default Eastron's own pages confirm for the "
            "SDM120 only; 9600 is kept until a page settles it",
    vendor="Eastron", product="SDM230-Modbus", serial=SDM_SERIAL)

SDM630 = MeterModel(
    "sdm630", "Eastron SDM630-Modbus (three phase)",
    "Eastron SDM630Modbus Smart Meter Modbus Protocol Implementation V1.8, input register table "
    "(section 1.2.1)",
    4, "big", _SDM_3P,
    factory="9600 baud, no parity: Eastron SDM630Modbus Smart Meter Modbus Protocol Implementation V1.8, "
            "section 1.3.1, holding register 40019 p.6 (0 = one stop bit and no parity, default) and "
            "40029 p.7 (2 = 9600 baud, default); the pages are counted from the page headers of a text "
            "copy of that PDF, not read off the PDF. The sibling SDM630MCT-ML User Manual V1.2 p.25 gives "
            "the same two defaults",
    vendor="Eastron", product="SDM630-Modbus", serial=SDM_SERIAL)

SDM72D = MeterModel(
    "sdm72d", "Eastron SDM72D-M, first version (totals only)",
    "Eastron SDM72D-M User Manual (SDM72DM-manual), Modbus input registers: "
    "total system power 30053, import active energy 30073",
    4, "big", (_total("power_total_w", 0x0034, F32), _total("energy_import_wh", 0x0048, F32, KWH)),
    factory="no parity: Eastron SDM72D-M User Manual V1.1 p.3 (RS485: parity none (default)) and p.15 "
            "(holding register 40019: 0 = one stop bit and no parity, default); V1.5 p.15 the same. "
            "9600 baud: not confirmed, p.3 lists 1200-19200 bps without a default and p.15 has no baud "
            "register; secondary: Tasmota SDM72_SPEED (default: 9600 baud), SDM.h of ESPEasy's "
            "SDM_Energy_Meter library (SDM72: 2 = 9600 baud, default)",
    vendor="Eastron", product="SDM72D-M", serial=SDM_SERIAL)

SDM72D_V2 = MeterModel(
    "sdm72d-m-v2", "Eastron SDM72D-M-2 (v2, per phase values)",
    "Eastron SDM72D-M-2 User Manual (sdm72dm-v2), Modbus input register table",
    4, "big", _SDM_3P,
    factory=UNCONFIRMED + "9600 baud, no parity. No SDM72D-M-2 manual page found; secondary: Tasmota "
            "SDM72_SPEED (default: 9600 baud), SDM.h of ESPEasy's SDM_Energy_Meter library "
            "(SDM72V2: 2 = 9600 baud, default), the first version's manual pages (SDM72D-M V1.1 p.3, "
            "p.15: no parity) and the SDM630's protocol V1.8 (same registers: 9600, no parity)",
    vendor="Eastron", product="SDM72D-M-2", serial=SDM_SERIAL)

# --- ABB B series: holding registers (FC3), integers high word first ---------------------------
# 0.1 V, 0.01 A, 0.01 W, 0.01 Hz, energy uint64 in 0.01 kWh (= 10 Wh).

_ABB_SOURCE = ("ABB B21/B23/B24 energy meters User Manual, chapter 'Communication with Modbus', "
               "mapping tables: instantaneous values 5B00h-5B2Ch, active import energy 5000h")
_ABB_FACTORY = (UNCONFIRMED + "9600 baud, no parity, the usual setting. The ABB B21/B23/B24 User "
                "Manual (2CMC485003M0201 Rev. A) chapter 9 was found only as its table of contents; "
                "secondary: none stating it found (evcc's abb-ab and the ABB_B23_Energy_Meter library "
                "use 9600 8N1 as their own default)")
_ABB_COMMON = (_total("power_total_w", 0x5B14, "int32", 0.01),
               _total("frequency_hz", 0x5B2C, "uint16", 0.01),
               _total("energy_import_wh", 0x5000, "uint64", 10.0))

# A B21 answers "not supported" (0x7FFFFFFF) at 5B16h, the L1 power of the three-phase models:
# its one phase's power is the total at 5B14h (mbmd abb.go maps Power 0x5B14, PowerL1 0x5B16).
ABB_B21 = MeterModel(
    "abb-b21", "ABB B21 (single phase)", _ABB_SOURCE + "; single phase: power is the total at 5B14h",
    3, "big",
    _phases("voltage_v", (0x5B00,), "uint32", 0.1) + _phases("current_a", (0x5B0C,), "uint32", 0.01)
    + _phases("power_w", (0x5B14,), "int32", 0.01) + _ABB_COMMON,
    not_available_sentinels=True, phases=1, factory=_ABB_FACTORY,
    vendor="ABB", product="B21")

_ABB_3P = (
    _phases("voltage_v", (0x5B00, 0x5B02, 0x5B04), "uint32", 0.1)
    + _phases("current_a", (0x5B0C, 0x5B0E, 0x5B10), "uint32", 0.01)
    + _phases("power_w", (0x5B16, 0x5B18, 0x5B1A), "int32", 0.01) + _ABB_COMMON)

ABB_B23 = MeterModel("abb-b23", "ABB B23 (three phase, direct)", _ABB_SOURCE, 3, "big", _ABB_3P,
                     not_available_sentinels=True, factory=_ABB_FACTORY,
    vendor="ABB", product="B23")
ABB_B24 = MeterModel("abb-b24", "ABB B24 (three phase, CT connected)", _ABB_SOURCE, 3, "big",
                     _ABB_3P, not_available_sentinels=True, factory=_ABB_FACTORY,
    vendor="ABB", product="B24")

# --- Carlo Gavazzi EM340: input registers (FC4), int32 low word first --------------------------
# 0.1 V, 0.001 A, 0.1 W, frequency int16 0.1 Hz, kWh(+) TOT in 0.1 kWh (= 100 Wh). An overflowed
# or missing value reads 7FFFFFFFh (7FFFh for int16): not a reading (2,147,483 A, 214 GWh).

EM340 = MeterModel(
    "em340", "Carlo Gavazzi EM340 (three phase)",
    "Carlo Gavazzi EM330/EM340/ET330/ET340 Communication Protocol (EM330_EM340_ET330_ET340_CP), "
    "instantaneous variables 0000h-0034h",
    4, "little",
    _phases("voltage_v", (0x00, 0x02, 0x04), "int32", 0.1)
    + _phases("current_a", (0x0C, 0x0E, 0x10), "int32", 0.001)
    + _phases("power_w", (0x12, 0x14, 0x16), "int32", 0.1)
    + (_total("power_total_w", 0x28, "int32", 0.1), _total("frequency_hz", 0x33, "int16", 0.1),
       _total("energy_import_wh", 0x34, "int32", 100.0)),
    not_available_sentinels=True,
    factory=UNCONFIRMED + "9600 baud, no parity, the usual setting. No Carlo Gavazzi EM340 manual page "
            "found; secondary: none stating it found (evcc's cg-emt3xx uses 9600 8N1 as its own default)",
    vendor="Carlo Gavazzi", product="EM340")

# --- ORNO OR-WE-516 / OR-WE-517: holding registers (FC3), float32 high word first --------------
# Power in kW, energy in kWh. Both models share one map (checked against mbmd's orno3p and
# the ya-modbus OR-WE-516 driver). Both leave the factory at 9600 baud, even parity, unlike
# Eastron's meters: no ORNO page was found, but a WE-516 and WE-517s were seen answering at 8E1.

_ORNO_SOURCE = ("ORNO OR-WE-516 / OR-WE-517 Modbus register description (manufacturer's register "
                "list): real-time values 000Eh-003Bh, energy 0100h-012Eh")
_ORNO = (
    _phases("voltage_v", (0x0E, 0x10, 0x12), F32) + _phases("current_a", (0x16, 0x18, 0x1A), F32)
    + _phases("power_w", (0x1E, 0x20, 0x22), F32, KW)
    + (_total("power_total_w", 0x1C, F32, KW), _total("frequency_hz", 0x14, F32),
       _total("energy_import_wh", 0x0108, F32, KWH)))  # 0108h: forward (import) active energy

OR_WE_516 = MeterModel(
    "or-we-516", "ORNO OR-WE-516 (three phase)", _ORNO_SOURCE, 3, "big", _ORNO, parity="E",
    factory=UNCONFIRMED + "9600 baud, even parity. No ORNO manual page found; secondary: mbmd's README "
            "(WE-516/517: by default 9600 8E1), mbmd issue #273 (a WE-516 answered only with --comset "
            "8E1), evcc's orno template (8E1). The ya-modbus OR-WE-516 driver says odd, without a source",
    vendor="ORNO", product="OR-WE-516")
OR_WE_517 = MeterModel(
    "or-we-517", "ORNO OR-WE-517 (three phase)", _ORNO_SOURCE, 3, "big", _ORNO, parity="E",
    factory=UNCONFIRMED + "9600 baud, even parity. No ORNO manual page found; secondary: TapHome's "
            "OR-WE-517 page (9600 bps, parity even), mbmd's README (9600 8E1), Tasmota's WE517 driver "
            "(9600, SERIAL_8E1), SmartEVSE issue #231 (ORNO-517: even parity)",
    vendor="ORNO", product="OR-WE-517")

# --- Schneider iEM3155: holding registers (FC3), high word first ---------------------------------
# The document numbers registers from 1: register 3028 is address 3027. Power in kW (float). The
# float energy register's unit is disputed (Wh in the manual, kWh in captures): the energy is the
# 64-bit total active energy import counter in Wh, register 3204 (mbmd iem3000.go: 0x0C83, int64).

IEM3155 = MeterModel(
    "iem3155", "Schneider Electric iEM3155 (three phase)",
    "Schneider Electric iEM3100/iEM3200/iEM3300 series User Manual (DOCA0005EN), "
    "Modbus register list: meter data 3000-3110, total active energy import 3204 (INT64, Wh)",
    3, "big",
    _phases("voltage_v", (3027, 3029, 3031), F32) + _phases("current_a", (2999, 3001, 3003), F32)
    + _phases("power_w", (3053, 3055, 3057), F32, KW)
    + (_total("power_total_w", 3059, F32, KW), _total("frequency_hz", 3109, F32),
       _total("energy_import_wh", 3203, "int64")),
    baudrate=19200, parity="E",
    factory=UNCONFIRMED + "19200 baud, even parity. The iEM3100/iEM3200/iEM3300 User Manual "
            "DOCA0005EN-04 p.51 lists 9600/19200/38400 baud and odd/even/none parity without marking the "
            "default; secondary: Tasmota's iEM3000 driver (IEM3000_SPEED 19200, 'default: 19200 baud', "
            "and 'Set meter Communication -> Parity to None': it ships with a parity), and the Modbus "
            "serial line specification's required default, even parity",
    vendor="Schneider Electric", product="iEM3155")

# --- Finder 7M.38: input registers (FC4), float32 high word first, energy in Wh ----------------
# Import energy at 2752 (float, Wh): mbmd finder7m38.go, a transcription of Finder's guide and a
# working user setup agree (2638, SmartEVSE's, has no source). Frequency at 2498 by Finder's own
# tutorial (mbmd has 2584).

FINDER_7M38 = MeterModel(
    "finder-7m38", "Finder 7M.38 (three phase)",
    "Finder Modbus Protocol Guide 7M.24 / 7M.38 (Modbus-7M24-7M38_v2_30062021), input registers: "
    "energy import 2752 (float Wh, as mbmd finder7m38.go); frequency 2498 (Finder 7M tutorial)",
    4, "big",
    _phases("voltage_v", (2500, 2502, 2504), F32) + _phases("current_a", (2516, 2518, 2520), F32)
    + _phases("power_w", (2530, 2532, 2534), F32)
    + (_total("power_total_w", 2536, F32), _total("frequency_hz", 2498, F32),
       _total("energy_import_wh", 2752, F32)),
    factory=UNCONFIRMED + "9600 baud, no parity, the usual setting. Finder's Modbus Protocol Guide "
            "(Modbus-7M24-7M38_v2_30062021) was not readable here; secondary: none stating it found "
            "(evcc's finder-7m38 uses 9600 8N1 as its own default)",
    vendor="Finder", product="7M.38")

# --- Phoenix Contact EEM-350-D-MCB: input registers (FC4), int32 low word first ---------------
# 0.1 V, 0.001 A, 0.1 W, energy in 0.1 kWh (= 100 Wh). Checked against SmartEVSE's meter table
# only; per-phase power and frequency are not mapped until confirmed from the data sheet. The
# layout is EM340's; its 7FFFFFFFh marker is not confirmed from the data sheet, but no value
# these registers can hold is 7FFFFFFFh (214 GWh, 214 MV), so it is never taken as a reading.

EEM_350 = MeterModel(
    "eem-350-d-mcb", "Phoenix Contact EEM-350-D-MCB (three phase)",
    "Phoenix Contact EEM-350-D-MCB data sheet, Modbus register table (input registers)",
    4, "little",
    _phases("voltage_v", (0x00, 0x02, 0x04), "int32", 0.1)
    + _phases("current_a", (0x0C, 0x0E, 0x10), "int32", 0.001)
    + (_total("power_total_w", 0x28, "int32", 0.1), _total("energy_import_wh", 0x3E, "int32", 100.0)),
    not_available_sentinels=True,
    factory=UNCONFIRMED + "9600 baud, no parity, the usual setting. No Phoenix Contact EEM-350-D-MCB "
            "data sheet page found; secondary: none stating it found",
    vendor="Phoenix Contact", product="EEM-350-D-MCB")

MODELS: dict[str, MeterModel] = {m.name: m for m in (
    SDM120, SDM230, SDM630, SDM72D, SDM72D_V2, ABB_B21, ABB_B23, ABB_B24, EM340,
    OR_WE_516, OR_WE_517, IEM3155, FINDER_7M38, EEM_350)}


def blocks(model: MeterModel, max_registers: int = 100) -> list[tuple[int, int, tuple[Field, ...]]]:
    """The reads a model needs: (address, count, fields) over runs of adjacent registers.

    Only registers the document defines are read: many meters answer a read that spans
    an undefined register with an illegal-address exception.
    """
    out: list[tuple[int, int, tuple[Field, ...]]] = []
    for field in sorted(set(model.fields), key=lambda f: (f.address, f.count)):
        if out:
            start, count, fields = out[-1]
            end = start + count
            if field.address <= end and max(end, field.address + field.count) - start <= max_registers:
                out[-1] = (start, max(end, field.address + field.count) - start, fields + (field,))
                continue
        out.append((field.address, field.count, (field,)))
    return out
