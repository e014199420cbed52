"""A config that needs packages this environment lacks: check, run and install refuse it (exit 2),
naming the extra and the pip command, and install offers to run it on a terminal. Run against
this test environment, which has the service extras but not the board's ([pi])."""

import os
import pty
import select
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from test_install import fake_etc, files_under

ROOT = Path(__file__).parent.parent
PI_PIP = "install with: " + shlex.join([f"{sys.prefix}/bin/python", "-m", "pip", "install", "mfrc522>=0.0.7", "spidev>=3.6",
                                        "evdev>=1.7", "lgpio>=0.2"])


def evsed(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "evsed", *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def pi_config(tmp_path: Path) -> Path:
    text = (ROOT / "config/pi-gpio-sdm630-rc522.toml").read_text()
    text = text.replace('state_dir = "/var/lib/evsed"', f'state_dir = "{tmp_path / "state"}"')
    path = tmp_path / "evsed.toml"
    path.write_text(text.replace('runtime_dir = "/run/evsed"', f'runtime_dir = "{tmp_path / "run"}"'))
    return path


@pytest.fixture(autouse=True)
def board_packages_missing():
    from importlib.metadata import PackageNotFoundError, distribution
    for name in ("lgpio", "spidev", "mfrc522", "evdev"):
        with pytest.raises(PackageNotFoundError):
            distribution(name)  # else this environment cannot show the refusal


@pytest.mark.parametrize("command", ["check", "run"])
def test_a_board_whose_packages_are_missing_is_refused_naming_the_extra_and_the_pip_command(tmp_path, command):
    path = pi_config(tmp_path)
    proc = evsed(command, "-c", str(path))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.splitlines()
    assert lines[0] == f"evsed: {path}: connector 1 contactor (backend 'gpio'): needs the extra [pi]: lgpio is not installed"
    assert "  connector 1 pilot (backend 'gpio'): needs the extra [pi]: spidev, lgpio are not installed" in lines
    assert "  card reader (backend 'rc522'): needs the extra [pi]: mfrc522 is not installed" in lines
    assert lines[-1] == PI_PIP
    assert "Traceback" not in proc.stderr and not (tmp_path / "run").exists()


def test_run_refuses_what_check_refuses_in_a_service_section(tmp_path):
    # It started, and the uplink it started crash-looped on the same error.
    from test_daemon import write_config
    path = write_config(tmp_path, '[ocpp]\nurl = "http://csms.example/ocpp"\n')
    checked = evsed("check", "-c", str(path))
    try:
        ran = evsed("run", "-c", str(path), timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail("evsed run started on a config evsed check refuses")
    assert checked.returncode == ran.returncode == 2
    assert ran.stderr == checked.stderr and ran.stderr.startswith(f"evsed: {path}:") and "[ocpp] url" in ran.stderr


def test_install_refuses_a_config_whose_packages_are_missing_and_changes_nothing(tmp_path):
    fake_etc(tmp_path, evsed_user=False)
    proc = evsed("install", "--root", str(tmp_path), "--config-example", "pi-gpio-sdm630-rc522")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "needs the extra [pi]" in proc.stderr and proc.stderr.rstrip().endswith(PI_PIP)
    assert files_under(tmp_path) == {"/etc/passwd", "/etc/group"}


def test_install_on_a_terminal_offers_the_pip_command_and_installs_nothing_when_declined(tmp_path):
    fake_etc(tmp_path, evsed_user=False)
    main, terminal = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "evsed", "install", "--root", str(tmp_path), "--config-example",
                             "pi-gpio-sdm630-rc522"], stdin=terminal, stdout=terminal, stderr=terminal)
    os.close(terminal)
    seen = b""
    try:
        while b"[y/N]" not in seen:
            ready, _, _ = select.select([main], [], [], 30)
            assert ready, seen
            seen += os.read(main, 4096)
        os.write(main, b"n\n")
        assert proc.wait(timeout=30) == 2
    finally:
        proc.kill()
        os.close(main)
    assert f"run {PI_PIP.removeprefix('install with: ')} now? [y/N]".encode() in seen
    assert files_under(tmp_path) == {"/etc/passwd", "/etc/group"}
