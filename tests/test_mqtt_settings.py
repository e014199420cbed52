"""The [mqtt] table: defaults, broker URLs, the password file, and errors that name file, line and key."""

import os
import socket

import pytest

from evsed import config
from evsed.mqtt import settings

MINIMAL = """
[charger]
id = "garage"
max_current_a = 16
[[connector]]
[connector.pilot]
backend = "sim"
[connector.contactor]
backend = "sim"
"""


def parsed(table: str, path="evsed.toml") -> settings.MqttSettings:
    return settings.parse(config.parse(MINIMAL + "[mqtt]\n" + table, path))


def error_for(table: str, path="evsed.toml") -> config.ConfigError:
    with pytest.raises(config.ConfigError) as info:
        parsed(table, path)
    return info.value


def test_an_empty_mqtt_table_has_documented_defaults():
    s = parsed("")
    assert (s.host, s.port, s.tls) == ("localhost", 1883, False)
    assert s.base_topic == "evsed/garage"
    assert s.discovery and s.discovery_prefix == "homeassistant"
    assert s.client_id == "evsed-mqtt-garage" and s.status_interval_s == 10
    assert s.username is None and s.password is None and s.ca_file is None
    assert s.max_current_a == 16


def test_mqtts_url_defaults_to_port_8883_and_takes_a_ca_file():
    s = parsed('url = "mqtts://broker.lan"\nca_file = "/etc/evsed/ca.pem"\n')
    assert (s.host, s.port, s.tls) == ("broker.lan", 8883, True)
    assert str(s.ca_file) == "/etc/evsed/ca.pem"


def test_url_with_a_port():
    s = parsed('url = "mqtt://10.1.2.3:1884"\n')
    assert (s.host, s.port) == ("10.1.2.3", 1884)


def test_a_config_without_mqtt_table_is_refused_by_the_service():
    with pytest.raises(config.ConfigError, match=r"\[mqtt\]"):
        settings.parse(config.parse(MINIMAL, "evsed.toml"))


@pytest.mark.parametrize("url, message", [
    ("http://broker", "expected mqtt://host"),
    ("mqtt://user:secret@broker", "credentials do not belong in the url"),
    ("mqtt://broker/path", "only a host and a port"),
    ("mqtt://broker:99999", "bad port"),
])
def test_a_bad_url_names_file_line_and_key(url, message):
    err = error_for(f'url = "{url}"\n')
    assert str(err).startswith("evsed.toml:11: [mqtt] url: ") and message in str(err)
    assert "secret" not in str(err)  # the message never echoes a password


def test_ca_file_needs_mqtts():
    err = error_for('ca_file = "/etc/ca.pem"\n')
    assert err.line == 11 and "mqtts" in str(err)


@pytest.mark.parametrize("topic", ["evsed/+/x", "evsed/#", "/evsed", "evsed//x", ""])
def test_base_topic_refuses_wildcards_and_empty_levels(topic):
    err = error_for(f'base_topic = "{topic}"\n')
    assert "[mqtt] base_topic" in str(err)


def test_unknown_key_is_an_error_with_a_suggestion():
    err = error_for('base_topc = "x"\n')
    assert str(err) == "evsed.toml:11: [mqtt] base_topc: unknown key (did you mean 'base_topic'?)"


def test_password_is_read_from_its_file_relative_to_the_config_and_never_shown(tmp_path):
    (tmp_path / "mqtt.secret").write_text("s3cret-pass\n")
    os.chmod(tmp_path / "mqtt.secret", 0o600)
    s = parsed('username = "evse"\npassword_file = "mqtt.secret"\n', tmp_path / "evsed.toml")
    assert s.password == "s3cret-pass"
    assert "s3cret" not in repr(s)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o660, 0o604, 0o620], ids=lambda m: f"{m:04o}")
def test_a_password_file_anyone_but_its_owner_may_read_or_write_is_refused(tmp_path, mode):
    # 0640 with group evsed: every service's user is in it, the web page's too (the OCPP one is 0600 for that)
    (tmp_path / "mqtt.secret").write_text("s3cret-pass\n")
    os.chmod(tmp_path / "mqtt.secret", mode)
    err = error_for('username = "evse"\npassword_file = "mqtt.secret"\n', tmp_path / "evsed.toml")
    assert err.line == 12 and f"mode {mode:o}): chmod 600" in str(err) and "s3cret" not in str(err)


def test_a_missing_password_file_names_the_key(tmp_path):
    err = error_for('username = "evse"\npassword_file = "nope"\n', tmp_path / "evsed.toml")
    assert err.line == 12 and "cannot read" in str(err)


def test_bounded_numbers():
    err = error_for("keepalive_s = 1\n")
    assert "[mqtt] keepalive_s" in str(err) and "out of range" in str(err)


def test_enabled_is_a_known_key_read_by_the_daemon():
    assert parsed("enabled = false\n").base_topic == "evsed/garage"
    assert "[mqtt] enabled: expected a boolean" in str(error_for('enabled = "no"\n'))


def test_the_restart_button_is_the_hosts_grant_which_the_daemons_own_config_reads():
    cfg = config.parse(MINIMAL + "[mqtt]\n", "evsed.toml")
    assert settings.parse(cfg).restart_button is False and cfg.control.granted("mqtt") == frozenset()
    cfg = config.parse(MINIMAL + "[mqtt]\nrestart_button = true\n", "evsed.toml")
    assert settings.parse(cfg).restart_button is True and cfg.control.granted("mqtt") == {"restart"}
    assert cfg.control.granted("web") == frozenset()
    with pytest.raises(config.ConfigError) as err:  # the daemon refuses it at start, not only the service
        config.parse(MINIMAL + '[mqtt]\nrestart_button = "yes"\n', "evsed.toml")
    assert "[mqtt] restart_button: expected a boolean" in str(err.value)


def test_card_uids_stay_out_unless_asked_and_a_start_charges_on_a_named_card():
    s = parsed("")
    assert s.card_uids is False and s.start_id_tag is None  # no start over MQTT
    cards = ('[[card]]\nuid = "04:a1:b2:c3"\nname = "Alice"\n'
             '[[card]]\nuid = "0A0B0C0D"\nname = "Guest"\nenabled = false\n')
    s = settings.parse(config.parse(MINIMAL + cards + '[mqtt]\ncard_uids = true\nstart_card = "Alice"\n', "evsed.toml"))
    assert s.card_uids is True and s.start_id_tag == "04A1B2C3" and "04A1B2C3" not in repr(s)
    for name, why in (("Bob", "no [[card]] is named 'Bob' (named cards: 'Alice', 'Guest')"),
                      ("Guest", "card 'Guest' is disabled")):
        with pytest.raises(config.ConfigError) as err:
            settings.parse(config.parse(MINIMAL + cards + f'[mqtt]\nstart_card = "{name}"\n', "evsed.toml"))
        assert str(err.value).endswith("[mqtt] start_card: " + why)


def test_the_charger_zone_and_the_tariffs_currency_come_from_the_config():
    s = settings.parse(config.parse(MINIMAL.replace('id = "garage"', 'id = "garage"\ntimezone = "Europe/Vienna"')
                                    + '[tariff]\ncurrency = "CHF"\ndecimals = 2\n[mqtt]\n', "evsed.toml"))
    assert (s.timezone, s.currency, s.currency_decimals) == ("Europe/Vienna", "CHF", 2)
    assert parsed("").currency is None  # no tariff: no session cost sensor


@pytest.mark.parametrize("web, url", [
    ('bind = "0.0.0.0"\nport = 8080\n', f"http://{socket.gethostname()}:8080/"),
    ('bind = "192.168.1.20"\nport = 80\n', "http://192.168.1.20:80/"),
    ('bind = "fd00::20"\n', "http://[fd00::20]:8080/"),
    ('bind = "127.0.0.1"\n', None),  # a page only this machine can open is no link for Home Assistant
    ('bind = "0.0.0.0"\nenabled = false\n', None),
])
def test_the_device_links_to_the_page_as_the_network_reaches_it(web, url):
    s = settings.parse(config.parse(MINIMAL + "[web]\n" + web + "[mqtt]\n", "evsed.toml"))
    assert s.configuration_url == url


def test_a_configuration_url_given_wins_and_must_be_http():
    assert parsed('configuration_url = "https://evse.example.net/"\n').configuration_url == "https://evse.example.net/"
    assert "[mqtt] configuration_url" in str(error_for('configuration_url = "ftp://x"\n'))
