"""The [ocpp] table parsed once into a frozen Settings, with file:line:key errors.

Secrets are read from their files here (the password file must be mode 0600) and never logged.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping
from urllib.parse import quote, urlsplit

from evsed import __version__
from evsed import dirs
from evsed.config import Config, Table
from evsed.ops import spool as spoolmod
from evsed.ops import update as updatemod


def running_version() -> str:
    """The evsed release this process runs (the installed package's version): what BootNotification
    says unless [ocpp] firmware_version names another."""
    try:
        return importlib.metadata.version("evsed")
    except importlib.metadata.PackageNotFoundError:
        return __version__


@dataclass(frozen=True)
class Settings:
    url: str                      # the CSMS endpoint without the identity
    identity: str                 # charge point identity, appended to the URL path
    security_profile: int = 0     # 0 none, 1 basic auth, 2 TLS + basic auth, 3 TLS client certificate
    password_file: Path | None = None
    password: str = field(default="", repr=False)
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    version: str = "1.6"
    vendor: str = "evsed"
    model: str = "evsed"
    serial_number: str = ""
    firmware_version: str = field(default_factory=running_version)
    state_file: Path = Path("ocpp.sqlite")
    update_key_file: Path | None = None  # [update] public_key_file: UpdateFirmware checks releases with it
    spool_dir: Path | None = None  # where UpdateFirmware leaves a release: <state_dir>/services/update
    heartbeat_s: int = 300        # until the CSMS gives one in BootNotification
    call_timeout_s: float = 30.0
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 300.0
    authorize_timeout_s: float = 10.0
    connectors: int = 1
    max_current_a: float = 32.0
    phases: int = 3
    voltage_v: float = 230.0
    keys: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))  # key defaults, as text

    @property
    def spool(self) -> Path:
        return self.spool_dir or spoolmod.directory(self.state_file.parent)

    @property
    def endpoint(self) -> str:
        return self.url.rstrip("/") + "/" + quote(self.identity, safe="")


def parse(config: Config, read_secrets: bool = True) -> Settings:
    """Settings from config.sections["ocpp"]; raises ConfigError naming file, line and key.
    read_secrets=False (`evsed check`, run as the daemon's user): a password file readable only by
    the uplink's own user is checked for its mode, not read."""
    t = config.sections["ocpp"].table()
    t.get("enabled", bool, True)  # read by the daemon: false, and `evsed run` does not start the uplink
    version = t.get("version", str, "1.6", choices=tuple(FIRST_VALUES))
    url = t.get("url", str)
    scheme = urlsplit(url).scheme
    if scheme not in ("ws", "wss") or not urlsplit(url).hostname:
        raise t.error("url", f"expected a ws:// or wss:// URL, got {url!r}")
    identity = t.get("identity", str, config.charger.id)
    if not identity or len(identity) > 48 or any(c in identity for c in "/?#:") or not identity.isprintable():
        raise t.error("identity", "expected 1-48 printable characters without / ? # :")
    profile = t.get("security_profile", int, 0, min=0, max=3)
    if profile >= 2 and scheme != "wss":
        raise t.error("url", f"security profile {profile} needs a wss:// URL")
    base = config.path.parent
    password_file = _path(t, base, "password_file")
    ca_file = _path(t, base, "ca_file", must_exist=True)
    cert_file = _path(t, base, "cert_file", must_exist=True)
    key_file = _path(t, base, "key_file", secret=True)
    password = ""
    if profile in (1, 2):
        if password_file is None:
            raise t.error("password_file", f"security profile {profile} needs a password_file")
        password = _read_secret(t, "password_file", password_file, read_secrets)
    if profile == 3 and (cert_file is None or key_file is None):
        raise t.error("cert_file", "security profile 3 needs cert_file and key_file")
    state = t.get("state_file", str, "")
    settings = Settings(
        url=url, identity=identity, security_profile=profile, password_file=password_file,
        password=password, ca_file=ca_file, cert_file=cert_file, key_file=key_file, version=version,
        vendor=t.get("vendor", str, "evsed"), model=t.get("model", str, "evsed"),
        serial_number=t.get("serial_number", str, ""),
        firmware_version=t.get("firmware_version", str, "") or running_version(),
        state_file=_state_file(base, state, dirs.services_dir(config.store.state_dir)),
        update_key_file=updatemod.settings(config).public_key_file,
        spool_dir=spoolmod.directory(dirs.services_dir(config.store.state_dir)),
        heartbeat_s=t.get("heartbeat_s", int, 300, min=1, max=86400),
        call_timeout_s=t.get("call_timeout_s", float, 30.0, min=0.1, max=600),
        reconnect_min_s=t.get("reconnect_min_s", float, 1.0, min=0.01, max=600),
        reconnect_max_s=t.get("reconnect_max_s", float, 300.0, min=0.01, max=3600),
        authorize_timeout_s=t.get("authorize_timeout_s", float, 10.0, min=0.5, max=120),
        connectors=len(config.connectors), max_current_a=config.charger.max_current_a,
        phases=config.charger.phases, voltage_v=config.charger.voltage_v,
        keys=MappingProxyType(_keys(t, version)))
    for name in ("vendor", "model"):
        if not 1 <= len(getattr(settings, name)) <= 20:
            raise t.error(name, "expected 1-20 characters (BootNotification)")
    if settings.reconnect_max_s < settings.reconnect_min_s:
        raise t.error("reconnect_max_s", "must be at least reconnect_min_s")
    t.done()
    return settings


# each version's adapter reads its own table of first values ([ocpp.keys] for 1.6, [ocpp.variables] for 2.0.1)
FIRST_VALUES = {"1.6": "evsed.uplink.v16.keys", "2.0.1": "evsed.uplink.v201.variables"}


def _keys(t: Table, version: str) -> dict[str, str]:
    """The first values of the version's configuration (a CSMS's change persists over them)."""
    module: Any = importlib.import_module(FIRST_VALUES[version])
    values: dict[str, str] = module.first_values(t)
    return values


def _path(t: Table, base: Path, key: str, *, must_exist: bool = False, secret: bool = False) -> Path | None:
    text = t.get(key, str, "")
    if not text:
        return None
    path = Path(os.path.expanduser(text))
    path = path if path.is_absolute() else base / path
    if (must_exist or secret) and not path.is_file():
        raise t.error(key, f"no such file: {path}")
    if secret:
        _check_mode(t, key, path)
    return path


def _check_mode(t: Table, key: str, path: Path) -> None:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise t.error(key, f"{path} is readable by others (mode {stat.S_IMODE(mode):o}); chmod 600 it "
                           "(its owner: the uplink's user, evsed-ocpp under systemd)")


def _read_secret(t: Table, key: str, path: Path, read: bool = True) -> str:
    if not path.is_file():
        raise t.error(key, f"no such file: {path}")
    _check_mode(t, key, path)
    if not read and not os.access(path, os.R_OK):
        return ""  # another user's, 0600: the uplink reads it when it starts
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:  # under systemd: a file not given to evsed-ocpp
        raise t.error(key, f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise t.error(key, f"{path} is not UTF-8 text") from None
    if not 8 <= len(text) <= 40:  # OCPP 1.6 security whitepaper: AuthorizationKey 16-40 (we allow 8+)
        raise t.error(key, "the password must be 8-40 characters")
    return text


def _state_file(base: Path, text: str, services_dir: Path) -> Path:
    if not text:
        return services_dir / "ocpp.sqlite"
    path = Path(os.path.expanduser(text))
    return path if path.is_absolute() else base / path

