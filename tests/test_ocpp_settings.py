"""The [ocpp] table: parsed into Settings with file:line:key errors; secrets must be 0600."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from evsed.config import ConfigError, load, parse
from evsed.uplink import settings

ROOT = Path(__file__).resolve().parent.parent
BASE = (ROOT / "config" / "simulator.toml").read_text()


def ocpp(text: str, path: Path | str = "<config>"):
    return settings.parse(parse(BASE + "\n[ocpp]\n" + text, path))


def test_the_shipped_simulator_ocpp_config_parses():
    s = settings.parse(load(ROOT / "config" / "simulator-ocpp.toml"))
    assert s.endpoint == "ws://127.0.0.1:9000/evsed-sim" and s.keys["MeterValueSampleInterval"] == "10"


def test_identity_defaults_to_the_charger_id_and_is_quoted_into_the_path():
    assert ocpp('url = "wss://csms.example/ocpp/"').endpoint == "wss://csms.example/ocpp/evsed-sim"
    assert ocpp('url = "ws://h/x"\nidentity = "a b"').endpoint == "ws://h/x/a%20b"


def test_an_unknown_key_names_file_line_and_key():
    with pytest.raises(ConfigError) as err:
        ocpp('url = "ws://h/"\nheartbeat = 5', "evsed.toml")
    assert "[ocpp] heartbeat: unknown key (did you mean 'heartbeat_s'?)" in str(err.value)
    assert str(err.value).startswith("evsed.toml:")


def test_profile_2_needs_wss_and_a_password_file():
    with pytest.raises(ConfigError, match="needs a wss:// URL"):
        ocpp('url = "ws://h/"\nsecurity_profile = 2')
    with pytest.raises(ConfigError, match="needs a password_file"):
        ocpp('url = "wss://h/"\nsecurity_profile = 2')


def test_a_password_file_readable_by_others_is_refused_and_the_password_not_shown(tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("a-long-password-1\n")
    secret.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600") as err:
        ocpp(f'url = "ws://h/"\nsecurity_profile = 1\npassword_file = "{secret}"')
    assert "a-long-password" not in str(err.value)
    secret.chmod(0o600)
    s = ocpp(f'url = "ws://h/"\nsecurity_profile = 1\npassword_file = "{secret}"')
    assert s.password == "a-long-password-1" and "a-long-password" not in repr(s)


def test_a_password_file_group_evsed_may_read_is_refused_and_its_owner_named(tmp_path):
    # Every service (the web page too) is in group evsed: 0640 would give it the CSMS password.
    secret = tmp_path / "pw"
    secret.write_text("a-long-password-1\n")
    secret.chmod(0o640)
    with pytest.raises(ConfigError, match=r"chmod 600 it \(its owner: the uplink's user, evsed-ocpp under systemd\)"):
        ocpp(f'url = "ws://h/"\nsecurity_profile = 1\npassword_file = "{secret}"')


def test_a_password_file_that_is_not_text_is_an_error_naming_it(tmp_path):
    secret = tmp_path / "pw"
    secret.write_bytes(b"\xff\xfe-not-utf-8")
    secret.chmod(0o600)
    with pytest.raises(ConfigError, match=f"password_file: {secret} is not UTF-8 text"):
        ocpp(f'url = "ws://h/"\nsecurity_profile = 1\npassword_file = "{secret}"')


def test_ocpp_keys_are_checked_like_change_configuration():
    with pytest.raises(ConfigError, match="MeterValuesSampledData"):
        ocpp('url = "ws://h/"\n[ocpp.keys]\nMeterValuesSampledData = "SoC"')
    with pytest.raises(ConfigError, match="unknown key"):
        ocpp('url = "ws://h/"\n[ocpp.keys]\nNoSuchKey = 1')
    assert ocpp('url = "ws://h/"\n[ocpp.keys]\nLocalPreAuthorize = true').keys["LocalPreAuthorize"] == "true"


def test_a_config_without_ocpp_never_imports_the_uplink():
    import subprocess
    import sys
    code = ("import sys; from evsed.config import load; load('config/simulator.toml'); "
            "import evsed.cli; print([m for m in sys.modules if m.startswith(('ocpp', 'evsed.uplink', 'websockets'))])")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give the file to another user")
def test_evsed_check_as_the_daemons_user_checks_the_uplinks_own_password_file_by_its_mode():
    # Install's next step is `sudo -u evsed evsed check`: the password file is evsed-ocpp's, 0600.
    from evsed.services.run import check_sections
    top = Path(tempfile.mkdtemp(prefix="evsed-check-"))
    try:
        top.chmod(0o755)
        secret = top / "ocpp-password"
        secret.write_text("a-long-password-1\n")
        secret.chmod(0o600)
        os.chown(secret, 992, 992)  # evsed-ocpp's
        broker = top / "mqtt-password"
        broker.write_text("another-password\n")
        broker.chmod(0o600)
        os.chown(broker, 993, 993)  # evsed-mqtt's
        config = parse(BASE + f'\n[ocpp]\nurl = "wss://h/"\nsecurity_profile = 2\npassword_file = "{secret}"\n'
                       f'\n[mqtt]\nurl = "mqtt://broker.lan"\nusername = "evse"\npassword_file = "{broker}"\n')
        check_sections(config)  # as root, which reads everything; it imports what the child needs
        assert as_user(995, lambda: check_sections(config)) == "ok"  # evsed: checked, not read
        assert "cannot read" in as_user(995, lambda: settings.parse(config))  # the uplink itself must read it
        secret.chmod(0o640)
        assert "readable by others" in as_user(995, lambda: check_sections(config))
        secret.chmod(0o600)
        broker.chmod(0o640)  # group evsed: the web page's user could read it
        assert "mqtt-password is readable by others (mode 640)" in as_user(995, lambda: check_sections(config))
    finally:
        shutil.rmtree(top)


def as_user(uid: int, call) -> str:
    """call() in a forked child running as uid: "ok", or the ConfigError's text."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never back into pytest
        outcome = "ok"
        try:
            os.setgroups([uid])
            os.setgid(uid)
            os.setuid(uid)
            call()
        except ConfigError as exc:
            outcome = str(exc)
        except BaseException as exc:  # noqa: BLE001 - reported to the parent, which fails on it
            outcome = f"unexpected {type(exc).__name__}: {exc}"
        finally:
            os.write(write, outcome.encode())
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        outcome = f.read().decode()
    os.waitpid(pid, 0)
    return outcome
