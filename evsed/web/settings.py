"""The [web] section parsed into frozen settings, and the password hashes it holds.

Hashes are hashlib's scrypt or PBKDF2 in one self-describing string, so a host can make one
with `python -m evsed.web hash-password` and paste it into the config.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from evsed.config import Config, ConfigError, Section

# scrypt N=2^14, r=8 needs 16 MiB while it runs (freed after); about 50 ms on a Pi 4.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
PBKDF2_ITERATIONS = 600_000  # OWASP 2023 for PBKDF2-HMAC-SHA256


@dataclass(frozen=True)
class WebSettings:
    bind: str = "127.0.0.1"
    port: int = 8080
    password_hash: str = ""  # empty: nobody can log in, the page is read-only
    session_secret_file: Path | None = None  # None: a new secret at every start (logins end)
    session_hours: float = 12.0
    title: str = ""  # shown on the page; empty: the charger id


def parse(config: Config) -> WebSettings | None:
    """The [web] settings, or None when there is no [web] section or enabled = false (off)."""
    section: Section | None = config.sections.get("web")
    if section is None:
        return None
    t = section.table()
    d = WebSettings()
    enabled = t.get("enabled", bool, True)  # `evsed run` starts the service unless false
    bind = t.get("bind", str, d.bind)
    try:
        ipaddress.ip_address(bind)
    except ValueError:
        raise t.error("bind", f"expected an IP address such as 127.0.0.1 or ::, got {bind!r}") from None
    password_hash = t.get("password_hash", str, d.password_hash)
    if password_hash and not _parse_hash(password_hash):
        raise t.error("password_hash", "expected a hash made by `python -m evsed.web hash-password`"
                      " (scrypt$... or pbkdf2_sha256$...)")
    secret = t.get("session_secret_file", str, "")
    secret_path = None
    if secret:
        secret_path = Path(os.path.expanduser(secret))
        if not secret_path.is_absolute():
            secret_path = (section.path.parent / secret_path).resolve()
    settings = WebSettings(
        bind=bind, port=t.get("port", int, d.port, min=1, max=65535), password_hash=password_hash,
        session_secret_file=secret_path,
        session_hours=t.get("session_hours", float, d.session_hours, min=0.1, max=24 * 30),
        title=t.get("title", str, d.title))
    t.done()
    return settings if enabled else None


def load_secret(settings: WebSettings) -> bytes:
    """The key that signs login cookies: the secret file's bytes, or a fresh random one."""
    if settings.session_secret_file is None:
        return secrets.token_bytes(32)
    try:
        data = settings.session_secret_file.read_bytes().strip()
    except OSError as exc:
        raise ConfigError(settings.session_secret_file, None, "[web] session_secret_file",
                          f"cannot read: {exc.strerror or exc}") from None
    if len(data) < 16:
        raise ConfigError(settings.session_secret_file, None, "[web] session_secret_file",
                          "too short: at least 16 bytes (e.g. `head -c 32 /dev/urandom | base64`)")
    return data


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def hash_password(password: str, method: str = "scrypt") -> str:
    """A salted hash for [web] password_hash: scrypt$N$r$p$salt$hash or pbkdf2_sha256$iter$salt$hash."""
    if not password:
        raise ValueError("empty password")
    salt = secrets.token_bytes(16)
    if method == "scrypt":
        digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P,
                                maxmem=64 * 1024 * 1024, dklen=32)
        return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"
    if method == "pbkdf2":
        digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, PBKDF2_ITERATIONS)
        return f"pbkdf2_sha256${PBKDF2_ITERATIONS}${_b64(salt)}${_b64(digest)}"
    raise ValueError(f"unknown method {method!r}: scrypt or pbkdf2")


def _parse_hash(text: str) -> tuple | None:
    parts = text.split("$")
    try:
        if parts[0] == "scrypt" and len(parts) == 6:
            n, r, p = (int(x) for x in parts[1:4])
            if n < 2 or n & (n - 1) or n > 2**20 or not 1 <= r <= 32 or not 1 <= p <= 16:
                return None
            return ("scrypt", n, r, p, _unb64(parts[4]), _unb64(parts[5]))
        if parts[0] == "pbkdf2_sha256" and len(parts) == 4:
            iterations = int(parts[1])
            if not 1000 <= iterations <= 10_000_000:
                return None
            return ("pbkdf2", iterations, _unb64(parts[2]), _unb64(parts[3]))
    except ValueError:
        return None
    return None


def verify_password(password: str, stored: str) -> bool:
    """True when password matches the stored hash; slow by design (run it off the event loop)."""
    parsed = _parse_hash(stored)
    if parsed is None or not password:
        return False
    if parsed[0] == "scrypt":
        _, n, r, p, salt, digest = parsed
        got = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p,
                             maxmem=256 * n * r * p + 1024 * 1024, dklen=len(digest))
    else:
        _, iterations, salt, digest = parsed
        got = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations, dklen=len(digest))
    return hmac.compare_digest(got, digest)
