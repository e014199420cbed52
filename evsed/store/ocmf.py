"""Signed meter data: one OCMF document per finished session, signed by the charger's own key.

`OCMF|{payload}|{signature}`, ECDSA secp256r1 with SHA-256 (OCMF's ECDSA-secp256r1-SHA256),
payload fields as the OCMF specification names them. The key is made on first start and kept
0600 under the state directory. This is a controller signature, not a calibration-law
(Eichrecht) certified meter signature: a meter that signs its own readings is kept apart.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from pathlib import Path
from typing import Protocol
from zoneinfo import ZoneInfo

KEY_FILE = "ocmf-key.pem"
PUBLIC_KEY_FILE = "ocmf-key.pub"  # hex DER, readable: what transparency software takes
SIGNATURE_ALGORITHM = "ECDSA-secp256r1-SHA256"
OBIS_IMPORT_WH = "01-00:01.08.00"  # active energy import, total

# OCMF TX: E end, L terminated locally, R remotely, A aborted (an error), P power failure
END_REASON = {"ev_disconnected": "E", "local": "L", "remote": "R", "deauthorized": "R",
              "emergency_stop": "A", "ground_fault": "A", "power_loss": "P", "reboot": "L", "other": "A"}


class SigningKey(Protocol):
    """What a session document needs of the charger's key: a Signer, or a LazySigner of one."""

    @property
    def public_key_hex(self) -> str: ...

    def sign(self, data: bytes) -> str: ...


class LazySigner:
    """The charger's key, loaded (or made, on the first start that needs it) at its first use: the
    cryptography import costs megabytes of RSS that a daemon with no finished session need not pay.
    The store uses it in the writer's thread, never on the event loop."""

    def __init__(self, state_dir: Path):
        self.state_dir = Path(state_dir)
        self._signer: Signer | None = None

    def _load(self) -> Signer:
        if self._signer is None:
            self._signer = Signer.load_or_create(self.state_dir)
        return self._signer

    @property
    def public_key_hex(self) -> str:
        return self._load().public_key_hex

    def sign(self, data: bytes) -> str:
        return self._load().sign(data)


class Signer:
    """The charger's OCMF key. The private key never leaves this object and its 0600 file."""

    def __init__(self, private_key):
        from cryptography.hazmat.primitives import serialization
        self._key = private_key
        der = private_key.public_key().public_bytes(serialization.Encoding.DER,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo)
        self.public_key_hex = der.hex().upper()

    @classmethod
    def load_or_create(cls, state_dir: Path) -> Signer:
        """The key under state_dir, made (0600, and its public half beside it) if there is none."""
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        path = Path(state_dir) / KEY_FILE
        try:
            return cls(serialization.load_pem_private_key(path.read_bytes(), password=None))
        except FileNotFoundError:
            pass
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # never a half-written key, never a moment readable by others
        signer = cls(key)
        (Path(state_dir) / PUBLIC_KEY_FILE).write_text(signer.public_key_hex + "\n")
        return signer

    def sign(self, data: bytes) -> str:
        """The DER ECDSA signature of SHA-256(data), hex."""
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        return self._key.sign(data, ec.ECDSA(hashes.SHA256())).hex().upper()


def _tm(iso_utc: str, tz: dt.tzinfo, status: str = "U") -> str:
    """OCMF time: local time with a colon-free offset, ms after a comma, then the time status:
    S (synchronised) while the kernel says its clock is, else U (unknown)."""
    local = dt.datetime.fromisoformat(iso_utc).astimezone(tz)
    text = local.strftime("%Y-%m-%dT%H:%M:%S,") + f"{local.microsecond // 1000:03d}" + local.strftime("%z")
    return f"{text} {status}"


def _kwh(wh: int):
    return wh / 1000  # a float prints as its shortest decimal: 12345 Wh -> 12.345, exact to the Wh


def payload(row: dict, *, charger_id: str, version: str, timezone: str = "UTC", synced: bool = False) -> dict:
    """The OCMF payload of a finished session row (keys as in the OCMF specification); synced:
    the kernel says the clock is synchronised (time status S, else U)."""
    tz, ts = ZoneInfo(timezone), "S" if synced else "U"
    tag, source = row["id_tag"], row["auth_source"]
    identified = source != "free_vend"
    ident: dict = {"IS": identified, "IL": "HEARSAY" if identified else "NONE",
                   "IF": (["OCPP_AUTH"] if source.startswith("ocpp") else ["RFID_PLAIN"]) if identified else [],
                   "IT": "NONE"}
    if identified:
        ident["IT"] = "ISO14443" if re.fullmatch(r"[0-9A-Fa-f]{8}|[0-9A-Fa-f]{14}", tag) else "LOCAL"
        ident["ID"] = tag
    reading = {"RI": OBIS_IMPORT_WH, "RU": "kWh", "RT": "AC", "EF": "", "ST": "G"}
    out: dict[str, object] = {"FV": "1.0", "GI": "evsed", "GS": charger_id, "GV": version, "PG": f"T{row['id']}"}
    for key, column in (("MV", "meter_vendor"), ("MM", "meter_model"), ("MS", "meter_id")):
        if row.get(column):  # the meter's identity, where its backend told it (else the gateway's, above)
            out[key] = row[column]
    out.update(ident)
    tt = row.get("tariff_text") or ""
    if tt:
        out["TT"] = tt[:250]
    out.update({"CT": "CBIDC", "CI": f"{charger_id}*{row['connector_id']}", "RD": [
        {"TM": _tm(row["started_at"], tz, ts), "TX": "B", "RV": _kwh(row["meter_start_wh"]), **reading},
        {"TM": _tm(row["stopped_at"], tz, ts), "TX": END_REASON.get(row["stop_reason"] or "", "E"),
         "RV": _kwh(row["meter_stop_wh"]), **reading}]})
    return out


def document(row: dict, signer: SigningKey, *, charger_id: str, version: str, timezone: str = "UTC",
             synced: bool = False) -> str:
    """`OCMF|{payload}|{signature}` for a finished session row; the signature covers the
    payload's exact bytes."""
    text = json.dumps(payload(row, charger_id=charger_id, version=version, timezone=timezone, synced=synced),
                      separators=(",", ":"), ensure_ascii=False)
    sig = {"SA": SIGNATURE_ALGORITHM, "SE": "hex", "SM": "application/x-der", "SD": signer.sign(text.encode())}
    return f"OCMF|{text}|{json.dumps(sig, separators=(',', ':'))}"
