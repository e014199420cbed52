"""The [mqtt] table, parsed once into MqttSettings through the config's bounded getters.

Errors name file, line and key like every other table; the password is read from its file and never shown.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import stat
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from evsed.config import Config, ConfigError, Table

DEFAULT_URL = "mqtt://localhost"
PORTS = {"mqtt": 1883, "mqtts": 8883}


@dataclass(frozen=True)
class MqttSettings:
    host: str
    port: int
    tls: bool
    base_topic: str                 # every topic of this charger starts with it
    client_id: str
    charger_id: str
    max_current_a: float            # the current limit's upper end: what set/current_a takes and the number declares
    timezone: str = "UTC"           # the charger's: a fault's retry time is said in it
    currency: str | None = None     # [tariff]'s: the session cost sensor's unit (no tariff: no sensor)
    currency_decimals: int = 2
    card_uids: bool = False         # publish card UIDs (id_tag) too; off: the card's name and group only
    start_id_tag: str | None = field(default=None, repr=False)  # [mqtt] start_card's UID: a start from MQTT is
                                    # its session (never published); None: no start over MQTT
    configuration_url: str | None = None  # the page, for Home Assistant's device card
    restart_button: bool = False    # the host granted the MQTT service the daemon's restart: the button is discovered
    ca_file: Path | None = None     # mqtts: the CA to trust instead of the system's
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    discovery: bool = True
    discovery_prefix: str = "homeassistant"
    keepalive_s: int = 30
    reconnect_max_s: float = 60.0   # back-off cap after a lost broker or daemon
    status_interval_s: float = 10.0  # state is refreshed at least this often without events


def parse(config: Config, read_secrets: bool = True) -> MqttSettings:
    """MqttSettings from config.sections["mqtt"]; raises ConfigError."""
    section = config.sections.get("mqtt")
    if section is None:
        raise ConfigError(config.path, None, "[mqtt]", "missing: the MQTT service needs an [mqtt] table")
    t = section.table()
    charger = config.charger
    t.get("enabled", bool, True)  # read by `evsed run`, which starts the service only when true
    url = t.get("url", str, DEFAULT_URL)
    host, port, tls = _broker(t, url)
    ca = t.get("ca_file", str, "")
    if ca and not tls:
        raise t.error("ca_file", "only for an mqtts:// url")
    username = t.get("username", str, "")
    password_file = t.get("password_file", str, "")
    base = t.get("base_topic", str, f"evsed/{charger.id}")
    _topic(t, "base_topic", base)
    prefix = t.get("discovery_prefix", str, "homeassistant")
    _topic(t, "discovery_prefix", prefix)
    client_id = t.get("client_id", str, f"evsed-mqtt-{charger.id}")
    if not 1 <= len(client_id) <= 64:
        raise t.error("client_id", "expected 1 to 64 characters")
    start_id_tag = _start_card(t, config, t.get("start_card", str, ""))
    t.get("restart_button", bool, False)  # the host's grant: the config reads it for the daemon (ControlConfig)
    url_of_page = t.get("configuration_url", str, "") or _page_url(config)
    if url_of_page and urlsplit(url_of_page).scheme not in ("http", "https"):
        raise t.error("configuration_url", f"expected an http:// or https:// address, got {url_of_page[:80]!r}")
    tariff = config.tariff
    settings = MqttSettings(
        host=host, port=port, tls=tls, base_topic=base, client_id=client_id, charger_id=charger.id,
        max_current_a=charger.max_current_a, timezone=charger.timezone,
        currency=tariff.currency if tariff is not None else None,
        currency_decimals=tariff.decimals if tariff is not None else 2,
        card_uids=t.get("card_uids", bool, False), start_id_tag=start_id_tag,
        configuration_url=url_of_page or None,
        restart_button=config.control.mqtt_restart,  # the daemon's own reading of the grant, which it enforces
        ca_file=_path(config.path, ca) if ca else None,
        username=username or None,
        password=_password(t, _path(config.path, password_file), read_secrets) if password_file else None,
        discovery=t.get("discovery", bool, True), discovery_prefix=prefix,
        keepalive_s=t.get("keepalive_s", int, 30, min=5, max=3600),
        reconnect_max_s=t.get("reconnect_max_s", float, 60.0, min=1, max=3600),
        status_interval_s=t.get("status_interval_s", float, 10.0, min=1, max=3600))
    t.done()
    if settings.password and not settings.username:
        raise t.error("password_file", "needs a username")
    return settings


def _start_card(t: Table, config: Config, name: str) -> str | None:
    """The UID of the [[card]] named `name` ("": none): the daemon starts a service's session only for a
    card its local list accepts, and a UID does not belong in a second place of the config."""
    if not name:
        return None
    cards = [c for c in config.cards if c.name == name]
    if len(cards) != 1:
        known = ", ".join(repr(c.name) for c in config.cards if c.name) or "none"
        raise t.error("start_card", f"{'no' if not cards else 'more than one'} [[card]] is named {name!r} "
                                    f"(named cards: {known})")
    if not cards[0].enabled:
        raise t.error("start_card", f"card {name!r} is disabled")
    return cards[0].uid


def _page_url(config: Config) -> str:
    """The web page's address as another machine reaches it, from [web]; "" when it has none (no page,
    or one bound to loopback only)."""
    if "web" not in config.sections:
        return ""
    from evsed.web import settings as web_settings  # stdlib only: h11 is the page service's own
    web = web_settings.parse(config)
    address = ipaddress.ip_address(web.bind) if web is not None else None
    if web is None or address is None or address.is_loopback:
        return ""
    host = socket.gethostname() if address.is_unspecified else str(address)
    return f"http://{f'[{host}]' if ':' in host else host}:{web.port}/"


def _broker(t: Table, url: str) -> tuple[str, int, bool]:
    parts = urlsplit(url)
    if parts.scheme not in PORTS:
        raise t.error("url", f"expected mqtt://host[:port] or mqtts://host[:port], got {url!r}")
    if parts.username is not None or parts.password is not None:
        raise t.error("url", "credentials do not belong in the url (logged): use username and password_file")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise t.error("url", f"expected only a host and a port, got {url!r}")
    try:
        port = parts.port or PORTS[parts.scheme]
    except ValueError:
        raise t.error("url", f"bad port in {url!r}") from None
    if not parts.hostname:
        raise t.error("url", f"no host in {url!r}")
    return parts.hostname, port, parts.scheme == "mqtts"


def _topic(t: Table, key: str, topic: str) -> None:
    # A wildcard or an empty level would make our own subscriptions match other devices' topics.
    if not topic or re.search(r"[+#\x00]", topic) or "" in topic.split("/"):
        raise t.error(key, f"expected topic levels without wildcards or empty levels, got {topic!r}")


def _path(config_path: Path, text: str) -> Path:
    path = Path(os.path.expanduser(text))
    return path if path.is_absolute() else (config_path.parent / path).resolve()


def _password(t: Table, path: Path, read: bool = True) -> str:
    """The password in path, a file its owner alone may read or write (0600, like the OCPP
    one: group evsed holds every service, the web page too). read=False (`evsed check` as
    another user) checks a file it may not read by its mode alone."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise t.error("password_file", f"cannot read {path}: {exc.strerror or exc}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise t.error("password_file", f"{path} is readable by others (mode {stat.S_IMODE(mode):o}): chmod 600 it "
                                        "(its owner: the MQTT service's user, evsed-mqtt under systemd)")
    if not read and not os.access(path, os.R_OK):
        return "(not read: the MQTT service's own)"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise t.error("password_file", f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise t.error("password_file", f"{path} is not UTF-8 text") from None
    password = text.rstrip("\r\n")
    if not password:
        raise t.error("password_file", f"{path} is empty")
    return password
