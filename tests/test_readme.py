"""The README's quick start followed as written: its install block runs line by line in a clean
virtual environment from a copy of this checkout (sudo dropped, / moved into a temporary root,
apt-get left to the Pi's image); then that environment refuses a config needing an extra it
lacks, and `evsed install` takes the offer to install it on a terminal. And `make run`'s recipe."""

from __future__ import annotations

import os
import pty
import re
import select
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from test_install import fake_etc

ROOT = Path(__file__).parent.parent
COPY_IGNORES = shutil.ignore_patterns(".venv*", ".git", "build", "dist", "*.egg-info", "__pycache__", ".demo",
                                      ".pytest_cache", ".hypothesis")


def install_block() -> list[str]:
    """The command lines of the README's install block (the one this file is named beside)."""
    text = (ROOT / "README.md").read_text()
    start = text.index("```sh\n", text.index("tests/test_readme.py")) + len("```sh\n")
    return [line for line in text[start:text.index("\n```", start)].splitlines() if line.strip()]


def as_typed(line: str, root: Path) -> list[str]:
    """A README line as this test runs it: without sudo, its absolute paths under root, and
    `evsed install` told that root (it would run useradd and systemctl otherwise)."""
    assert line.startswith("sudo "), line
    argv = shlex.split(line.removeprefix("sudo "))
    if argv[0] == "python3":
        argv[0] = sys._base_executable  # the interpreter this suite runs on, as python3 is on the Pi
    argv = [re.sub(r"^(/opt/|/usr/local/)", lambda m: f"{root}{m.group(1)}", a) for a in argv]
    if argv[0].endswith("/evsed") and argv[1] == "install":
        argv += ["--root", str(root)]
    return argv


def run(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "EVSED_CONFIG")}
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env, stdin=subprocess.DEVNULL,
                          **kwargs)


def test_the_readme_install_works_as_written_in_a_clean_environment(tmp_path):
    lines = install_block()
    assert lines[0] == "sudo apt-get install -y python3-venv"  # Raspberry Pi OS's package: there already
    checkout = tmp_path / "evsed"
    shutil.copytree(ROOT, checkout, symlinks=True, ignore=COPY_IGNORES)
    root = tmp_path / "root"
    fake_etc(root, evsed_user=False)
    (root / "usr/local/bin").mkdir(parents=True)
    for line in lines[1:]:
        proc = run(as_typed(line, root), cwd=checkout)
        assert proc.returncode == 0, f"{line}\n{proc.stdout}\n{proc.stderr}"
    venv = root / "opt/evsed/venv"
    evsed = root / "usr/local/bin/evsed"
    assert run([str(evsed), "--version"]).stdout == "evsed 0.1.0\n"
    assert os.readlink(root / "opt/evsed/current") == str(venv)
    example = re.search(r"--config-example (\S+)", lines[-1]).group(1)
    assert (root / "etc/evsed/evsed.toml").read_text() == (ROOT / "config" / f"{example}.toml").read_text()
    where = run([str(venv / "bin/python"), "-c", "import evsed, h11; print(evsed.__file__)"], cwd=tmp_path)
    assert where.stdout.startswith(str(venv)), where.stdout + where.stderr  # installed, not the checkout

    # This environment has the extra web, not mqtt: a config with [mqtt] is refused by each command
    # that would start it, naming the extra and the pip command; install offers to run it.
    config = tmp_path / "mqtt.toml"
    config.write_text((ROOT / "config/simulator.toml").read_text() + f'\n[store]\nstate_dir = "{tmp_path / "s"}"\n'
                      f'runtime_dir = "{tmp_path / "r"}"\n\n[mqtt]\nurl = "mqtt://127.0.0.1"\n')
    pip = shlex.join([str(venv / "bin/python"), "-m", "pip", "install", "aiomqtt>=2"])
    for command in (["check"], ["run"], ["service", "mqtt"]):
        proc = run([str(evsed), *command, "-c", str(config)])
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert proc.stderr == (f"evsed: {config}:{config.read_text().splitlines().index('[mqtt]') + 1}: [mqtt]: "
                               f"needs the extra [mqtt]: aiomqtt is not installed\ninstall with: {pip}\n")
    (root / "etc/evsed/evsed.toml").write_text(config.read_text())
    seen, code = answer_on_a_terminal([str(evsed), "install", "--root", str(root)], b"y\n")
    assert f"run {pip} now? [y/N]".encode() in seen and code == 0, seen.decode(errors="replace")
    assert b"would run: systemctl enable evsed.service evsed-service@mqtt.service" in seen
    assert run([str(evsed), "check", "-c", str(config)]).returncode == 0


def answer_on_a_terminal(argv: list[str], answer: bytes) -> tuple[bytes, int]:
    """Run argv on a pseudo-terminal; type `answer` at its [y/N] question. Returns what it showed."""
    main, terminal = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "EVSED_CONFIG")}
    proc = subprocess.Popen(argv, stdin=terminal, stdout=terminal, stderr=terminal, env=env)
    os.close(terminal)
    seen, answered = b"", False
    try:
        while True:
            ready, _, _ = select.select([main], [], [], 300)
            assert ready, seen
            try:
                chunk = os.read(main, 4096)
            except OSError:  # the terminal closed: the command ended
                break
            if not chunk:
                break
            seen += chunk
            if not answered and b"[y/N]" in seen:
                os.write(main, answer)
                answered = True
        return seen, proc.wait(timeout=60)
    finally:
        proc.kill()
        os.close(main)


def test_make_run_installs_what_running_needs_and_keeps_the_demo_in_the_checkout(tmp_path):
    # It installed the test toolchain (402 MB, 96 s, nothing shown) and, as root, kept the demo's
    # sessions and signing key in /var/lib/evsed, where a real install later found them.
    venv = tmp_path / "venv"
    recipe = run(["make", "--no-print-directory", "-n", "-B", "run", f"VENV={venv}"], cwd=ROOT).stdout.splitlines()
    installs = [line for line in recipe if " pip install" in line]
    assert installs == [f"{venv}/bin/python -m pip install -e ."]  # no [test], and not --quiet: progress shows
    demo = ROOT / ".demo"
    assert f"state_dir = \"%s/state\"" in next(line for line in recipe if "[store]" in line)
    assert recipe[-1] == f"{venv}/bin/evsed run -c {demo}/evsed.toml"
    assert any(line.startswith("echo ") and "once; pip shows its progress" in line for line in recipe)
    # make test still installs the test toolchain
    test_recipe = run(["make", "--no-print-directory", "-n", "-B", "test", f"VENV={venv}"], cwd=ROOT).stdout
    assert f"{venv}/bin/python -m pip install --quiet -e '.[test]'" in test_recipe
