"""`evsed install` and `evsed uninstall` into a temporary root: every file, owner and mode, the
user and systemctl commands it would run, and the units through systemd-analyze."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from evsed.cli import main
from evsed.ops import install

ROOT = Path(__file__).parent.parent
EVSED_GID, NET_GID = 990, 991
SERVICE_UIDS = {"evsed-ocpp": 992, "evsed-mqtt": 993, "evsed-web": 994}


def fake_etc(root: Path, *, evsed_user: bool, groups=("gpio", "spi", "dialout"), service_users=(),
             old_net_user: bool = False, net_uid: int = NET_GID) -> None:
    """A root's passwd and group files, as on a Pi (gpio, spi, dialout) before or after useradd:
    the evsed user, the services' users named, and the one user they all shared before."""
    (root / "etc").mkdir(parents=True, exist_ok=True)
    passwd = ["root:x:0:0:root:/root:/bin/bash"]
    group = ["root:x:0:"] + [f"{g}:x:{100 + i}:" for i, g in enumerate(groups)]
    members = [*service_users, *(["evsed-net"] if old_net_user else [])]
    for user in members:
        uid = net_uid if user == "evsed-net" else SERVICE_UIDS[user]
        passwd.append(f"{user}:x:{uid}:{uid}::/nonexistent:/usr/sbin/nologin")
        group.append(f"{user}:x:{uid}:")
    if evsed_user:
        passwd.append(f"evsed:x:{EVSED_GID}:{EVSED_GID}::/var/lib/evsed:/usr/sbin/nologin")
        group.append(f"evsed:x:{EVSED_GID}:{','.join(members)}")
    (root / "etc" / "passwd").write_text("\n".join(passwd) + "\n")
    (root / "etc" / "group").write_text("\n".join(group) + "\n")


PI_PACKAGES = ("mfrc522", "spidev", "evdev", "lgpio")


@pytest.fixture(autouse=True)
def pi_packages(tmp_path_factory, monkeypatch):
    """The [pi] extra's packages as installed (their metadata, which is what install checks): the
    boards are not here to import them, and these tests install configs that name them."""
    site = tmp_path_factory.mktemp("site")
    for name in PI_PACKAGES:
        info = site / f"{name}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    monkeypatch.syspath_prepend(str(site))


def run_install(root: Path, *args: str, capsys) -> tuple[int, list[str]]:
    code = main(["install", "--root", str(root), *args])
    return code, capsys.readouterr().out.splitlines()


def mode_owner(path: Path) -> tuple[str, int, int]:
    st = path.lstat()
    return f"{stat.S_IMODE(st.st_mode):04o}", st.st_uid, st.st_gid


def files_under(root: Path) -> set[str]:
    return {"/" + str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() or p.is_symlink()}


def test_install_on_a_fresh_pi_puts_every_file_in_place_and_says_what_it_would_run(tmp_path, capsys):
    fake_etc(tmp_path, evsed_user=False)
    code, out = run_install(tmp_path, "--config-example", "pi-gpio-sdm630-rc522", capsys=capsys)
    assert code == 0, out
    assert files_under(tmp_path) == {
        "/etc/passwd", "/etc/group", "/etc/evsed/evsed.toml", "/etc/systemd/system/evsed.service",
        "/etc/systemd/system/evsed-service@.service", "/etc/systemd/system/evsed.service.d/evsed-install.conf",
        "/etc/systemd/system/evsed-update.service", "/etc/systemd/system/evsed-update.path", "/opt/evsed/current"}
    # The user joins the device groups this host has (no "input" here); nothing ran outside the root.
    assert ("would run: useradd --system --user-group --home-dir /var/lib/evsed --no-create-home --shell "
            "/usr/sbin/nologin --comment 'evsed EV charger daemon' --groups gpio,spi,dialout evsed") in out
    # the example runs no service: no service user
    assert [line for line in out if line.startswith("would run: useradd")] == [
        line for line in out if line.startswith("would run: useradd") and line.endswith(" evsed")]
    assert out.index("would run: systemctl daemon-reload") < out.index("would run: systemctl enable evsed.service")
    assert (tmp_path / "etc/evsed/evsed.toml").read_text() == (ROOT / "config/pi-gpio-sdm630-rc522.toml").read_text()
    assert mode_owner(tmp_path / "etc/evsed/evsed.toml")[0] == "0640"
    assert mode_owner(tmp_path / "etc/evsed")[0] == "0750"
    for unit in ("evsed.service", "evsed-service@.service", "evsed-update.service", "evsed-update.path"):
        assert mode_owner(tmp_path / "etc/systemd/system" / unit) == ("0644", 0, 0), unit
    # without [ocpp] nothing spools a release: the update path unit is installed, not enabled
    assert "would run: systemctl enable evsed.service" in out
    assert os.readlink(tmp_path / "opt/evsed/current") == sys.prefix
    assert out[-3:] == ["  sudo -u evsed /opt/evsed/current/bin/evsed check -c /etc/evsed/evsed.toml   "
                        "# opens every configured device once", "  sudo systemctl start evsed",
                        "  journalctl -u evsed -f"]
    assert "next:" in out


def test_the_drop_in_allows_exactly_the_configured_devices(tmp_path, capsys):
    fake_etc(tmp_path, evsed_user=True)
    assert run_install(tmp_path, "--config-example", "pi-gpio-sdm630-rc522", capsys=capsys)[0] == 0
    text = (tmp_path / "etc/systemd/system/evsed.service.d/evsed-install.conf").read_text()
    allowed = re.findall(r"^DeviceAllow=(\S+) (\S+)$", text, re.M)
    assert allowed == [("/dev/gpiochip0", "rw"), ("/dev/gpiochip4", "rw"), ("/dev/spidev0.0", "rw"),
                       ("char-ttyUSB", "rw"), ("char-ttyACM", "rw"), ("/dev/spidev0.1", "rw"), ("/dev/gpiomem", "rw")]
    assert "ReadWritePaths=-/sys/class/pwm/pwmchip0" in text and "Environment=LG_WD=/run/evsed" in text
    assert "AF_INET" not in text and "PrivateNetwork" not in text  # an RS-485 meter needs no network


def test_every_path_install_puts_in_place_has_its_owner_and_mode(tmp_path, capsys):
    # The config and its directory: root's, readable by group evsed only (a card list, keys'
    # paths); units and the drop-in: root's, world-readable as systemd expects; the release link.
    # Whatever the installer's umask: under 077 the evsed user must still reach /opt/evsed.
    fake_etc(tmp_path, evsed_user=True)
    old = os.umask(0o077)
    try:
        assert run_install(tmp_path, "--config-example", "pi-gpio-sdm630-rc522", capsys=capsys)[0] == 0
    finally:
        os.umask(old)
    made = {"/" + str(p.relative_to(tmp_path)): mode_owner(p) for p in tmp_path.rglob("*")
            if p.name not in ("passwd", "group")}
    unit = ("0644", 0, 0)
    assert made == {
        "/etc": made["/etc"],  # the test's own (fake_etc)
        "/etc/systemd": ("0755", 0, 0), "/etc/systemd/system": ("0755", 0, 0),
        # the daemon writes a card learned on the page into its config: the directory and file are its own
        "/etc/evsed": ("0750", EVSED_GID, EVSED_GID), "/etc/evsed/evsed.toml": ("0640", EVSED_GID, EVSED_GID),
        "/etc/systemd/system/evsed.service": unit, "/etc/systemd/system/evsed-service@.service": unit,
        "/etc/systemd/system/evsed-update.service": unit, "/etc/systemd/system/evsed-update.path": unit,
        "/etc/systemd/system/evsed.service.d": ("0755", 0, 0),
        "/etc/systemd/system/evsed.service.d/evsed-install.conf": unit,
        "/opt": ("0755", 0, 0), "/opt/evsed": ("0755", 0, 0), "/opt/evsed/current": ("0777", 0, 0),  # a symlink
    }


def test_a_modbus_tcp_meter_opens_the_network_to_its_address_only(tmp_path, capsys):
    fake_etc(tmp_path, evsed_user=True)
    assert run_install(tmp_path, "--config-example", "openevse-sdm120-tcp", capsys=capsys)[0] == 0
    text = (tmp_path / "etc/systemd/system/evsed.service.d/evsed-install.conf").read_text()
    assert re.findall(r"^(PrivateNetwork|RestrictAddressFamilies|IPAddressAllow)=(.*)$", text, re.M) == [
        ("PrivateNetwork", "no"), ("RestrictAddressFamilies", "AF_INET AF_INET6"), ("IPAddressAllow", "192.0.2.10")]
    assert re.findall(r"^DeviceAllow=(\S+)", text, re.M) == ["char-ttyUSB", "char-ttyACM", "/dev/serial0"]


def test_install_keeps_the_hosts_config_owns_files_by_the_evsed_group_and_enables_its_services(tmp_path, capsys):
    fake_etc(tmp_path, evsed_user=True, groups=("gpio", "dialout", "input"))
    host_config = tmp_path / "etc/evsed/evsed.toml"
    host_config.parent.mkdir(parents=True)
    text = (ROOT / "config/simulator.toml").read_text() + '\n[web]\nport = 8080\n\n[mqtt]\nenabled = false\n'
    host_config.write_text(text)
    code, out = run_install(tmp_path, capsys=capsys)
    assert code == 0, out
    assert host_config.read_text() == text
    assert "kept /etc/evsed/evsed.toml (the host's; never overwritten)" in out
    assert mode_owner(tmp_path / "etc/evsed") == ("0750", EVSED_GID, EVSED_GID)
    # the evsed user exists but is in none of the device groups yet
    assert "would run: usermod --append --groups gpio,dialout,input evsed" in out
    # [mqtt] enabled = false runs nowhere: not as a child, not as a unit, and gets no user
    assert [line.split()[-1] for line in out if "useradd" in line] == ["evsed-web"]
    assert "would run: systemctl enable evsed.service evsed-service@web.service" in out
    assert out[-2] == "  sudo systemctl start evsed evsed-service@web"


def test_with_ocpp_the_update_path_unit_is_enabled_and_a_missing_release_key_is_named(tmp_path, capsys):
    fake_etc(tmp_path, evsed_user=True)
    host_config = tmp_path / "etc/evsed/evsed.toml"
    host_config.parent.mkdir(parents=True)
    host_config.write_text((ROOT / "config/simulator.toml").read_text() + '\n[ocpp]\nurl = "ws://csms.example/"\n')
    code, out = run_install(tmp_path, capsys=capsys)
    assert code == 0, out
    assert "would run: systemctl enable evsed.service evsed-service@ocpp.service evsed-update.path" in out
    assert any(line.startswith("note: /etc/evsed/evsed.toml has no [update] public_key_file") for line in out)
    assert out[-2] == "  sudo systemctl start evsed evsed-service@ocpp evsed-update.path"
    path_unit = (tmp_path / "etc/systemd/system/evsed-update.path").read_text()
    assert "PathExists=/var/lib/evsed/services/update/request.json" in path_unit  # where the uplink spools
    (tmp_path / "etc/evsed/release.pub").write_text("")
    host_config.write_text(host_config.read_text() + '\n[update]\npublic_key_file = "release.pub"\n')
    code, out = run_install(tmp_path, capsys=capsys)
    assert code == 0 and not any(line.startswith("note:") for line in out)


ALL_SERVICES = '\n[ocpp]\nurl = "ws://csms.example/"\n\n[mqtt]\nurl = "mqtt://localhost"\n\n[web]\nport = 8080\n'


def test_each_configured_service_gets_a_user_of_its_own_in_group_evsed_and_its_unit_runs_as_it(tmp_path, capsys):
    # A web page broken into must not read the OCPP password or queue, nor the MQTT password:
    # each 0600, its own service's, so no two services share a user.
    fake_etc(tmp_path, evsed_user=False)
    host_config = tmp_path / "etc/evsed/evsed.toml"
    host_config.parent.mkdir(parents=True)
    host_config.write_text((ROOT / "config/simulator.toml").read_text() + ALL_SERVICES)
    code, out = run_install(tmp_path, capsys=capsys)
    assert code == 0, out
    useradds = [line for line in out if line.startswith("would run: useradd")]
    assert useradds[0].endswith(" evsed")  # first: the group evsed the others join
    assert useradds[1:] == [
        "would run: useradd --system --user-group --home-dir /nonexistent --no-create-home --shell "
        f"/usr/sbin/nologin --comment 'evsed {name} service' --groups evsed evsed-{name}" for name in ("ocpp", "mqtt", "web")]
    template = (tmp_path / "etc/systemd/system/evsed-service@.service").read_text()
    assert re.findall(r"^(User|Group|SupplementaryGroups)=(.*)$", template, re.M) == [
        ("User", "evsed-%i"), ("Group", "evsed-%i"), ("SupplementaryGroups", "evsed")]
    enabled = next(line for line in out if line.startswith("would run: systemctl enable")).split()[4:]
    instances = [u.removeprefix("evsed-service@").removesuffix(".service") for u in enabled if "@" in u]
    assert instances == ["ocpp", "mqtt", "web"]
    assert [install.service_user(i) for i in instances] == [line.split()[-1] for line in useradds[1:]]


def test_a_service_user_outside_group_evsed_is_added_to_it_and_existing_ones_are_kept(tmp_path, capsys):
    fake_etc(tmp_path, evsed_user=True, service_users=("evsed-ocpp",))
    group = tmp_path / "etc/group"
    group.write_text(group.read_text() + "evsed-web:x:994:\n")
    (tmp_path / "etc/passwd").write_text((tmp_path / "etc/passwd").read_text()
                                         + "evsed-web:x:994:994::/nonexistent:/usr/sbin/nologin\n")
    host_config = tmp_path / "etc/evsed/evsed.toml"
    host_config.parent.mkdir(parents=True)
    host_config.write_text((ROOT / "config/simulator.toml").read_text() + ALL_SERVICES)
    code, out = run_install(tmp_path, capsys=capsys)
    assert code == 0, out
    assert [line.split()[-1] for line in out if "useradd" in line] == ["evsed-mqtt"]
    assert [line for line in out if "usermod" in line and "evsed-" in line] == [
        "would run: usermod --append --groups evsed evsed-web"]


def test_the_old_shared_user_is_kept_but_no_longer_used_and_its_files_go_to_the_service_using_them(tmp_path, capsys):
    # Before, every service ran as evsed-net: the uplink's queue and spool in services/ are its, and
    # so may be the password files the host gave it. The test's own files stand for them
    # (evsed-net has the test's uid here).
    fake_etc(tmp_path, evsed_user=True, service_users=(), old_net_user=True, net_uid=os.geteuid())
    services = tmp_path / "var/lib/evsed/services"
    (services / "update").mkdir(parents=True)
    (services / "ocpp.sqlite").write_bytes(b"SQLite format 3\0")
    host_config = tmp_path / "etc/evsed/evsed.toml"
    host_config.parent.mkdir(parents=True)
    for secret in ("ocpp-password", "mqtt-password"):
        (tmp_path / "etc/evsed" / secret).write_text("s3cret-pass\n")
    host_config.write_text((ROOT / "config/simulator.toml").read_text() + '\n[ocpp]\nurl = "ws://csms.example/"\n'
                           'password_file = "ocpp-password"\n\n[mqtt]\nenabled = false\n'
                           'password_file = "/etc/evsed/mqtt-password"\n')
    code, out = run_install(tmp_path, capsys=capsys)
    assert code == 0, out
    assert [line.split()[-1] for line in out if "useradd" in line] == ["evsed-ocpp"]
    assert [line for line in out if "chown" in line] == [
        f"would run: chown --recursive --no-dereference --from=evsed-net evsed-ocpp {services}",
        f"would run: chown --no-dereference --from=evsed-net evsed-ocpp {tmp_path}/etc/evsed/ocpp-password"]
    assert f"note: {tmp_path}/etc/evsed/mqtt-password still belongs to evsed-net ([mqtt] does not run)" in out
    assert any(line.startswith("note: the user evsed-net is no longer used") and line.endswith("userdel evsed-net")
               for line in out)
    assert not any(line.startswith("would run: user") and line.endswith("evsed-net") for line in out)


def test_the_old_shared_user_owning_nothing_gets_only_the_note(tmp_path, capsys):
    fake_etc(tmp_path, evsed_user=True, service_users=("evsed-ocpp",), old_net_user=True)  # uid 991: not the test's
    (tmp_path / "var/lib/evsed/services").mkdir(parents=True)
    host_config = tmp_path / "etc/evsed/evsed.toml"
    host_config.parent.mkdir(parents=True)
    host_config.write_text((ROOT / "config/simulator.toml").read_text() + '\n[ocpp]\nurl = "ws://csms.example/"\n')
    code, out = run_install(tmp_path, capsys=capsys)
    assert code == 0, out
    assert not any("chown" in line or "useradd" in line for line in out)
    assert any(line.startswith("note: the user evsed-net is no longer used") for line in out)


def test_installing_again_changes_nothing(tmp_path, capsys):
    fake_etc(tmp_path, evsed_user=True)
    run_install(tmp_path, "--config-example", "simulator", capsys=capsys)
    before = snapshot(tmp_path)
    code, out = run_install(tmp_path, capsys=capsys)
    assert code == 0
    assert not [line for line in out if line.startswith(("wrote", "updated", "linked", "made"))]
    assert snapshot(tmp_path) == before


def snapshot(root: Path) -> dict:
    paths = [root / p.lstrip("/") for p in files_under(root)]
    return {p: (os.readlink(p) if p.is_symlink() else p.read_bytes(), mode_owner(p)) for p in paths}


def test_a_broken_host_config_stops_the_install_before_anything_changes(tmp_path, capsys):
    fake_etc(tmp_path, evsed_user=False)
    config = tmp_path / "etc/evsed/evsed.toml"
    config.parent.mkdir(parents=True)
    config.write_text("[charger]\nmax_curent_a = 16\n")
    assert main(["install", "--root", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip().endswith("evsed.toml:2: [charger] max_curent_a: unknown key "
                                                    "(did you mean 'max_current_a'?)")
    assert files_under(tmp_path) == {"/etc/passwd", "/etc/group", "/etc/evsed/evsed.toml"}


def test_without_a_config_or_an_example_install_names_the_examples_and_installs_nothing(tmp_path, capsys):
    # It installed the simulator's config: a charger in a garage running on a simulated EV.
    fake_etc(tmp_path, evsed_user=False)
    assert main(["install", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    examples = ", ".join(sorted(p.stem for p in (ROOT / "config").glob("*.toml")))
    assert err == (f"evsed: install: there is no /etc/evsed/evsed.toml yet: name the example to start from with "
                   f"--config-example NAME, one of {examples} (README.md, Quick start)\n")
    assert files_under(tmp_path) == {"/etc/passwd", "/etc/group"}
    usage = subprocess.run([sys.executable, "-m", "evsed", "install", "--help"], capture_output=True, text=True)
    assert all(name in "".join(usage.stdout.split()) for name in examples.split(", "))  # --config-example's help


def test_the_commands_install_prints_paste_into_a_shell_as_they_ran(tmp_path, capsys):
    fake_etc(tmp_path, evsed_user=False)
    host_config = tmp_path / "etc/evsed/evsed.toml"
    host_config.parent.mkdir(parents=True)
    host_config.write_text((ROOT / "config/simulator.toml").read_text() + ALL_SERVICES)
    host = install.Host(tmp_path)
    install.install(host)
    printed = [line.removeprefix("would run: ") for line in host.did if line.startswith("would run: ")]
    assert [shlex.split(line) for line in printed] == host.commands
    assert "--comment 'evsed EV charger daemon'" in printed[0]


def test_an_unknown_example_is_refused(tmp_path, capsys):
    assert main(["install", "--root", str(tmp_path), "--config-example", "nope"]) == 2
    examples = ", ".join(sorted(p.stem for p in (ROOT / "config").glob("*.toml")))
    assert f"no example config 'nope'; one of {examples}\n" in capsys.readouterr().err


def test_uninstall_removes_the_units_and_keeps_the_sessions_and_the_config(tmp_path, capsys):
    fake_etc(tmp_path, evsed_user=True)
    run_install(tmp_path, "--config-example", "simulator", capsys=capsys)
    wants = tmp_path / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir()
    (wants / "evsed-service@ocpp.service").symlink_to("/etc/systemd/system/evsed-service@.service")
    db = tmp_path / "var/lib/evsed/sessions.db"
    db.parent.mkdir(parents=True)
    db.write_bytes(b"SQLite format 3\0")
    assert main(["uninstall", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "would run: systemctl disable --now evsed-service@ocpp.service evsed-update.path evsed.service"
    assert "would run: systemctl daemon-reload" in out
    assert files_under(tmp_path) == {"/etc/passwd", "/etc/group", "/etc/evsed/evsed.toml",
                                     "/var/lib/evsed/sessions.db", "/etc/systemd/system/multi-user.target.wants/"
                                     "evsed-service@ocpp.service"}  # systemctl disable removes that link
    assert not (tmp_path / "etc/systemd/system/evsed.service.d").exists()
    assert "removed /etc/systemd/system/evsed-update.path" in out
    assert out[-1].startswith("kept /var/lib/evsed (the sessions database), /etc/evsed/evsed.toml")


# --- the units through systemd-analyze ----------------------------------------------------------------------

ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed "
                                   "(Debian: apt-get install systemd); the units' checks need it")


def analyzable(root: Path, tmp_path: Path) -> Path:
    """The installed units with /opt/evsed/current resolved, since verify checks that ExecStart exists
    on this machine (its --root would look for every unit of the boot there too)."""
    out = tmp_path / "units"
    shutil.copytree(root / "etc/systemd/system", out)
    for unit in out.glob("*.service"):
        unit.write_text(unit.read_text().replace("/opt/evsed/current", sys.prefix))
    return out


def exposure(unit: Path) -> float:
    proc = subprocess.run([ANALYZE, "security", "--offline=true", str(unit)], capture_output=True, text=True,
                          cwd=unit.parent, timeout=60)
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+) (\w+)", proc.stdout)
    assert match, proc.stdout + proc.stderr
    return float(match.group(1))


@needs_analyze
@pytest.mark.parametrize("example, most", [("simulator", 1.0), ("pi-gpio-sdm630-rc522", 1.0),
                                           ("openevse-sdm120-tcp", 2.0)])
def test_the_installed_safety_unit_verifies_and_rates_ok(tmp_path, capsys, example, most):
    root = tmp_path / "root"
    fake_etc(root, evsed_user=True)
    assert run_install(root, "--config-example", example, capsys=capsys)[0] == 0
    units = analyzable(root, tmp_path)
    proc = subprocess.run([ANALYZE, "verify", str(units / "evsed.service")], capture_output=True, text=True,
                          cwd=units, timeout=60)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert exposure(units / "evsed.service") <= most


def test_a_config_the_units_cannot_run_leaves_them_failed_instead_of_restarting(tmp_path):
    # `evsed run` and `evsed service` exit 2 on a config error or a missing package; restarting
    # cannot mend either, and each start logged the same error every few seconds.
    from evsed.cli import EXIT_CONFIG
    for unit in ("evsed.service", "evsed-service@.service"):
        text = (ROOT / "systemd" / unit).read_text()
        assert re.search(r"^Restart=on-failure$", text, re.M), unit
        assert re.findall(r"^RestartPreventExitStatus=(.*)$", text, re.M) == [str(EXIT_CONFIG)], unit
    bad = tmp_path / "evsed.toml"
    bad.write_text("[charger]\nmax_curent_a = 16\n")
    for argv in (["run", "-c", str(bad)], ["service", "web", "-c", str(bad)]):
        assert subprocess.run([sys.executable, "-m", "evsed", *argv], capture_output=True).returncode == EXIT_CONFIG


def test_the_service_units_find_the_daemons_directories_without_a_store_table(monkeypatch):
    # A config without [store]: the services (users evsed-NAME, no StateDirectory= of their own,
    # which would chown the daemon's) must still find the sessions database and the socket.
    daemon = (ROOT / "systemd/evsed.service").read_text()
    template = (ROOT / "systemd/evsed-service@.service").read_text()
    state = re.search(r"^StateDirectory=(\S+)$", daemon, re.M).group(1)
    runtime = re.search(r"^RuntimeDirectory=(\S+)$", daemon, re.M).group(1)
    assert not re.search(r"^(StateDirectory|RuntimeDirectory)=", template, re.M)
    env = dict(kv.split("=", 1) for kv in re.search(r"^Environment=(.*)$", template, re.M).group(1).split())
    assert env == {"STATE_DIRECTORY": f"/var/lib/{state}", "RUNTIME_DIRECTORY": f"/run/{runtime}"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(os, "geteuid", lambda: 999)  # not root, as evsed-web
    from evsed.config import default_runtime_dir, default_state_dir
    assert (default_state_dir(), default_runtime_dir()) == (Path("/var/lib/evsed"), Path("/run/evsed"))


def test_the_directories_systemd_makes_for_the_units_are_the_ones_the_code_accepts(tmp_path):
    # systemd creates StateDirectory= and RuntimeDirectory= with the units' modes before evsed
    # starts; the daemon refuses a directory another user could tamper with. The two must agree,
    # and the services must be able to write where their files go (ReadWritePaths=).
    from evsed import dirs
    from evsed.ops import spool
    daemon = (ROOT / "systemd/evsed.service").read_text()
    template = (ROOT / "systemd/evsed-service@.service").read_text()
    for key, name in (("StateDirectory", "state"), ("RuntimeDirectory", "run")):
        path = tmp_path / name
        path.mkdir()
        os.chmod(path, int(re.search(rf"^{key}Mode=(\d+)$", daemon, re.M).group(1), 8))
        dirs.ensure_dir(path, dirs.STATE_DIR_MODE if name == "state" else dirs.RUNTIME_DIR_MODE)  # no refusal
    services = dirs.ensure_services_dir(tmp_path / "state")
    writable = re.search(r"^ReadWritePaths=(.*)$", template, re.M).group(1).split()
    state = "/var/lib/" + re.search(r"^StateDirectory=(\S+)$", daemon, re.M).group(1)
    assert writable == [str(dirs.services_dir(Path(state)))]
    assert spool.directory(services).parent == services  # the uplink's spool; its queue goes beside it
    path_unit = (ROOT / "systemd/evsed-update.path").read_text()
    assert f"PathExists={spool.directory(dirs.services_dir(Path(state)))}/request.json" in path_unit


@needs_analyze
def test_the_service_template_verifies_and_rates_ok(tmp_path, capsys):
    root = tmp_path / "root"
    fake_etc(root, evsed_user=True)
    run_install(root, "--config-example", "simulator", capsys=capsys)
    units = analyzable(root, tmp_path)
    web = units / "evsed-service@web.service"
    web.write_text((units / "evsed-service@.service").read_text())
    proc = subprocess.run([ANALYZE, "verify", str(units / "evsed.service"), str(web)], capture_output=True,
                          text=True, cwd=units, timeout=60)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert exposure(web) <= 2.0


@needs_analyze
def test_the_update_units_verify_and_the_root_one_rates_ok(tmp_path, capsys):
    """evsed-update.service runs as root (it writes /opt/evsed and restarts evsed) with the network
    (pip fetches the dependencies): 2.1 OK, the rest of the sandbox as tight as the daemon's."""
    root = tmp_path / "root"
    fake_etc(root, evsed_user=True)
    run_install(root, "--config-example", "simulator", capsys=capsys)
    units = analyzable(root, tmp_path)
    proc = subprocess.run([ANALYZE, "verify", str(units / "evsed-update.service"), str(units / "evsed-update.path")],
                          capture_output=True, text=True, cwd=units, timeout=60)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert exposure(units / "evsed-update.service") <= 2.5


# --- packaging ----------------------------------------------------------------------------------------------

def test_the_wheel_and_sdist_build_without_warnings_and_the_wheel_checks_the_simulator(tmp_path):
    """`python -m build`, then the wheel alone in a clean virtual environment runs `evsed check`."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}  # its notes are not ours
    build = subprocess.run([sys.executable, "-m", "build", "-o", str(tmp_path / "dist"), str(ROOT)],
                           capture_output=True, text=True, env=env, timeout=300)
    assert build.returncode == 0, build.stdout + build.stderr
    warnings = [line for line in (build.stdout + build.stderr).splitlines()
                if re.search(r"warn|deprecat", line, re.I)
                and "is neither a file nor a directory" not in line]  # pip's note on this machine's index
    assert warnings == []
    wheel, = (tmp_path / "dist").glob("evsed-*-py3-none-any.whl")
    assert len(list((tmp_path / "dist").glob("evsed-*.tar.gz"))) == 1
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    pip = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin/python"), "install", "-q",
                          str(wheel)], capture_output=True, text=True, timeout=300)
    assert pip.returncode == 0, pip.stderr
    check = subprocess.run([str(venv / "bin/evsed"), "check", "-c", str(ROOT / "config/simulator.toml")],
                           capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert check.returncode == 0 and check.stdout.endswith("all devices answered\n"), check.stdout + check.stderr
    # the units and the examples travel in the wheel, for `evsed install`
    listing = subprocess.run([str(venv / "bin/python"), "-c", "from evsed.ops import install; "
                              "print(install.example_names(), len(install.unit_text('evsed.service')))"],
                             capture_output=True, text=True, timeout=60, cwd=tmp_path)
    examples = sorted(p.stem for p in (ROOT / "config").glob("*.toml"))
    assert listing.stdout.startswith(str(examples)), listing.stderr
