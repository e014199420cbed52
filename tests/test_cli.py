"""The evsed command: sessions in three formats, status text, errors without tracebacks."""

import csv
import datetime as dt
import io
import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

import protocol_records as pr
from evsed import protocol as p
from evsed import cli
from evsed.cli import status as status_cli
from evsed.store.sessions import LiveSession, Store

ROOT = Path(__file__).parent.parent


def config_with_sessions(tmp_path: Path) -> Path:
    text = (ROOT / "config" / "simulator.toml").read_text()
    text += f'\n[store]\nstate_dir = "{tmp_path / "state"}"\nruntime_dir = "{tmp_path / "run"}"\n'
    path = tmp_path / "evsed.toml"
    path.write_text(text)
    (tmp_path / "state").mkdir()
    store = Store(tmp_path / "state" / "sessions.db")
    for i, (tag, name) in enumerate((("04A1B2C3", "Alice"), ("04D4E5F6", "Bob"))):
        s = LiveSession(1, tag, name, "family", "local", f"2026-01-0{5 + i}T09:00:00+00:00", 1000, 1000)
        store.start(s)
        store.stop(s.row_id, 8400 + i, 11040.0, "ev_disconnected", f"2026-01-0{5 + i}T10:00:00+00:00")
    store.close()
    return path


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "evsed", *args], capture_output=True, text=True, timeout=60)


def test_sessions_as_table_csv_and_json(tmp_path):
    path = config_with_sessions(tmp_path)
    table = run("sessions", "-c", str(path))
    assert table.returncode == 0
    lines = table.stdout.splitlines()
    assert lines[0].split()[:4] == ["id", "conn", "card", "start"]
    assert "Alice" in lines[1] and "2026-01-05 10:00:00" in lines[1] and "7400" in lines[1]
    assert lines[1].endswith("ev_disconnected")
    rows = list(csv.DictReader(io.StringIO(run("sessions", "-c", str(path), "--format", "csv").stdout)))
    assert [r["card_name"] for r in rows] == ["Alice", "Bob"]
    assert rows[1]["energy_wh"] == "7401" and rows[1]["meter_start_wh"] == "1000"
    data = json.loads(run("sessions", "-c", str(path), "--format", "json", "--card", "Bob").stdout)
    assert [(d["id_tag"], d["stop_reason"], d["peak_power_w"]) for d in data] == [("04D4E5F6", "ev_disconnected", 11040.0)]
    since = json.loads(run("sessions", "-c", str(path), "--format", "json", "--since", "2026-01-06").stdout)
    assert [d["card_name"] for d in since] == ["Bob"]


def test_status_without_a_daemon_says_so(tmp_path):
    path = config_with_sessions(tmp_path)
    proc = run("status", "-c", str(path))
    assert proc.returncode == 1 and "no evsed daemon is running" in proc.stderr and "Traceback" not in proc.stderr


class PlantedSocket:
    """A control socket another user planted in the runtime directory: it answers a status and
    keeps every request it is sent (a clear-faults reaching it is a command stolen)."""

    def __init__(self, runtime_dir: Path):
        self.received: list[bytes] = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(runtime_dir / "control.sock"))
        self.sock.listen(4)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:  # closed: the test is over
                return
            with conn:
                self.received.append(conn.recv(65536))
                conn.sendall(b'{"ok": true, "connectors": [], "services": {"planted": {"state": "fake"}}}\n')

    def close(self) -> None:
        self.sock.close()
        self.thread.join(timeout=5)


@pytest.mark.parametrize("squat", ["owned by another user", "world-writable"])
def test_the_cli_refuses_a_squatted_runtime_directory(tmp_path, capsys, squat):
    # /tmp/evsed-UID made by someone else before the daemon started: the daemon refuses it, and so
    # must the CLI, or `status` shows the planter's answer and `clear-faults` goes to the planter.
    if squat == "owned by another user" and os.geteuid() != 0:
        pytest.skip("only root can give a directory to another user")
    path = config_with_sessions(tmp_path)
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o755)
    planted = PlantedSocket(runtime)
    try:
        if squat == "owned by another user":
            os.chown(runtime, 65534, 65534)
            os.chown(runtime / "control.sock", 65534, 65534)
        else:
            runtime.chmod(0o777)
        for command in ("status", "clear-faults"):
            assert cli.main([command, "-c", str(path)]) == 1
            out, err = capsys.readouterr()
            assert "refusing the control socket" in err and str(runtime) in err and "planted" not in out
        assert planted.received == []
    finally:
        planted.close()


def test_status_text_shows_why_not_charging():
    text = status_cli.format_status(pr.connector(
        status="Preparing", state="B", measured=p.Measured(current_a=(0, 0, 0), power_w=0, energy_wh=12, stale=False),
        faults=(p.FaultNow(fault="rcd", detail="trip 1", clears_by="retry", lockout=False, retry_in_s=299.0),),
        last_refusal=p.Refusal(id_tag="DEADBEEF", reason="unknown card", at="2026-01-05T09:00:00+00:00",
                               card_name=""),
        reason="card refused: unknown card"))
    assert "connector 1: Preparing" in text
    assert "state B, steady +12 V" in text and "contactor   open" in text
    assert "fault       rcd (trip 1); retry in 299 s" in text
    assert "refused     card DEADBEEF: unknown card" in text
    assert "why         card refused: unknown card" in text


def test_status_text_shows_an_unavailable_pilot_and_why():
    text = status_cli.format_status(pr.connector(
        state=None, pilot_error="OpenEVSE /dev/ttyUSB0: serial link lost: device disconnected"))
    assert "state ?, steady +12 V" in text
    assert "pilot       unavailable: OpenEVSE /dev/ttyUSB0: serial link lost: device disconnected" in text
    assert "meter " not in text  # none configured, none failing


def test_status_text_shows_why_the_meter_gives_no_reading():
    text = status_cli.format_status(pr.connector(meter_error="Modbus /dev/ttyUSB1 unit 1: no answer within 0.5 s"))
    assert "  meter       no reading: Modbus /dev/ttyUSB1 unit 1: no answer within 0.5 s" in text


# --- the CLI against a daemon on its socket --------------------------------------------------------------------

async def evsed(*argv: str) -> subprocess.CompletedProcess:
    """The `evsed` command as a process, beside a daemon running in this loop."""
    import asyncio
    return await asyncio.to_thread(run, *argv)


def test_status_shows_local_times_the_offer_as_offered_no_unset_limits_and_no_python_values(tmp_path, capsys):
    import asyncio
    from evsed import config
    from evsed.services.link import Link
    from test_daemon import charging, write_config
    path = write_config(tmp_path)  # Europe/Amsterdam
    cfg = config.load(path)

    async def scenario():
        async with charging(cfg) as daemon:
            link = await Link.connect(cfg.store.runtime_dir, "ocpp")  # a service tells how it does
            await link.command(p.ServiceStatus(status=p.ServiceState(connected=False, limits_a={"0": None, "1": 16.0})))
            await link.close()
            started = daemon.connectors[1].session.started_at
            return await evsed("status", "-c", str(path)), started

    proc, started = asyncio.run(scenario())
    out = proc.stdout
    assert proc.returncode == 0, proc.stderr
    local = dt.datetime.fromisoformat(started).astimezone(ZoneInfo("Europe/Amsterdam"))
    assert f"since {local:%Y-%m-%d %H:%M:%S}:" in out and "+00:00" not in out
    assert "PWM 53.3 % = 32 A offered" in out  # 32 A asked; the duty's 0.1 % steps give 31.98
    assert "service ocpp: connected no, queued 0, dropped 0, malformed 0, limits_a 1=16\n" in out
    assert not any(word in out for word in ("None", "True", "False", "{", "}", "'"))
    assert "  mode        fast, group family\n" in out
    limits = [line for line in out.splitlines() if line.startswith("  limit")]
    assert limits and all(line.split()[2] in ("A", "blocks") or line.split()[3] == "A" for line in limits), limits
    assert "  no limit    window (" in out  # the chain lists the sources that set a limit or say why not


# What `evsed status` must not import: each costs it milliseconds beside the interpreter's own start
# (bench/cli.py; DESIGN.md: a CLI command within 3x of it). dataclasses brings inspect and ast.
# (tomllib only for a config that names [store] runtime_dir, zoneinfo only to show a session's times)
# Of the protocol, only the status command's own module (and the types and plans it names: without
# typing, which comes here with tomllib only); of the CLI, only the modules status shows with.
STATUS_NEVER_IMPORTS = ("dataclasses", "inspect", "pathlib", "asyncio", "sqlite3", "evsed.config",
                        "evsed.shell", "evsed.store", "evsed.core", "hal", "simulator", "structlog",
                        "evsed.protocol", "evsed.protocol_events", "evsed.protocol_sim",
                        "evsed.cli.ops", "evsed.cli.records")


def test_status_imports_none_of_the_heavy_modules(tmp_path):
    # Against a charging daemon, so that every line of status is shown: the session and its times,
    # a service's state, the limits, the plan. The typed protocol reads the reply, as everywhere.
    import asyncio
    from evsed import config
    from evsed.services.link import Link
    from test_daemon import charging, write_config
    path = write_config(tmp_path)
    cfg = config.load(path)
    code = ("import sys; before = set(sys.modules)\n"  # a dev install's path hook imports pathlib itself
            "import contextlib, io; from evsed import cli\n"
            "for argv in (['status', '-c', sys.argv[1]], ['status', '--json', '-c', sys.argv[1]]):\n"
            "    out = io.StringIO()\n"
            "    with contextlib.redirect_stdout(out):\n"
            "        assert cli.main(argv) == 0\n"
            "    assert 'connector 1' in out.getvalue() or '\"connectors\"' in out.getvalue()\n"
            "print(sorted(m for m in set(sys.modules) - before if m.split('.')[0] in sys.argv[2:] or m in sys.argv[2:]))")

    async def scenario():
        async with charging(cfg):
            link = await Link.connect(cfg.store.runtime_dir, "ocpp")
            await link.command(p.ServiceStatus(status=p.ServiceState(connected=True, limits_a={"1": 16.0})))
            await link.close()
            return await asyncio.to_thread(subprocess.run, [sys.executable, "-c", code, str(path),
                                                            *STATUS_NEVER_IMPORTS],
                                           capture_output=True, text=True, timeout=60)

    proc = asyncio.run(scenario())
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_sim_commands_send_the_simulators_records_without_the_whole_protocol(tmp_path):
    import asyncio
    from evsed import config
    from test_daemon import running, write_config
    path = write_config(tmp_path)
    cfg = config.load(path)
    code = ("import sys; from evsed import cli\n"
            "for argv in (['sim', 'plug'], ['sim', 'tap', '04A1B2C3'], ['sim', 'unplug']):\n"
            "    assert cli.main([*argv, '-c', sys.argv[1]]) == 0\n"
            "print(sorted(m for m in sys.modules if m in ('evsed.protocol', 'evsed.protocol_events', "
            "'simulator.hardware')))")

    async def scenario():
        async with running(cfg):
            return await asyncio.to_thread(subprocess.run, [sys.executable, "-c", code, str(path)],
                                           capture_output=True, text=True, timeout=60)

    proc = asyncio.run(scenario())
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["ok", "ok: card 04A1B2C3", "ok", "[]"]


def test_status_works_while_the_config_has_a_syntax_error_and_says_so(tmp_path, capsys):
    import asyncio
    from evsed import config
    from test_daemon import running, write_config
    path = write_config(tmp_path)
    cfg = config.load(path)

    async def scenario():
        async with running(cfg):
            path.write_text(path.read_text() + "\n[[card]\nuid = 'half-typed'\n")  # the host is editing it
            return await evsed("status", "-c", str(path))

    proc = asyncio.run(scenario())
    out, err = proc.stdout, proc.stderr
    assert proc.returncode == 0, err
    assert out.startswith("connector 1: Available")
    assert f"evsed: {path}: TOML syntax:" in err and f"looking for the daemon in {tmp_path / 'run'}" in err


@pytest.mark.skipif(Path("/etc/evsed/evsed.toml").exists(), reason="this machine has a system config: the CLI "
                    "processes would use it")
def test_without_a_config_the_cli_uses_the_running_daemons_and_says_so(tmp_path, capsys, monkeypatch):
    # `make run` runs the daemon on a config of its own; `evsed sessions` in another terminal, with
    # no -c, reads that daemon's sessions (it used the built-in defaults, silently).
    import asyncio
    from evsed import config
    from test_daemon import charging
    monkeypatch.delenv("EVSED_CONFIG", raising=False)
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(tmp_path / "run"))  # the default socket, for both
    path = tmp_path / "demo.toml"
    path.write_text((ROOT / "config" / "simulator.toml").read_text() + f'\n[store]\nstate_dir = "{tmp_path / "demo"}"\n')
    cfg = config.load(path)

    async def scenario():
        async with charging(cfg) as daemon:
            assert (await evsed("sim", "unplug")).returncode == 0
            while daemon.connectors[1].session is not None:
                await asyncio.sleep(0.01)
            return await evsed("sessions", "--format", "json")

    proc = asyncio.run(scenario())
    out, err = proc.stdout, proc.stderr
    assert proc.returncode == 0, err
    assert [s["card_name"] for s in json.loads(out[out.index("["):])] == ["Alice"]
    assert f"evsed: using {path}, the running daemon's config" in err


def test_without_a_config_or_a_daemon_the_cli_says_it_uses_built_in_defaults(tmp_path, capsys, monkeypatch):
    from evsed import dirs
    monkeypatch.delenv("EVSED_CONFIG", raising=False)
    monkeypatch.setattr(dirs, "DEFAULT_PATH", tmp_path / "no-system-config.toml")
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(tmp_path / "run"))
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    assert cli.main(["sessions"]) == 0
    err = capsys.readouterr().err
    assert "no config (-c, $EVSED_CONFIG" in err and f"built-in defaults, sessions in {tmp_path / 'state'}" in err


def test_the_system_config_means_the_services_directories_for_every_user(monkeypatch):
    # A member of group evsed running `evsed status` reads /etc/evsed/evsed.toml: the socket is the
    # service's /run/evsed, not the user's own runtime directory.
    from evsed import config, dirs
    for name in ("STATE_DIRECTORY", "RUNTIME_DIRECTORY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    text = (ROOT / "config" / "simulator.toml").read_text()
    system = config.parse(text, dirs.DEFAULT_PATH)
    assert (system.store.state_dir, system.store.runtime_dir) == (Path("/var/lib/evsed"), Path("/run/evsed"))
    elsewhere = config.parse(text, "/home/pi/evsed.toml")
    assert elsewhere.store.runtime_dir != Path("/run/evsed")


def test_version():
    proc = run("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == "evsed 0.1.0"


def test_version_is_answered_before_any_parser_or_command_module_is_imported():
    code = ("import sys; from evsed import cli\n"
            "assert cli.main(['--version']) == 0\n"
            "print(sorted(m for m in sys.modules if m == 'argparse' or m.startswith('evsed.cli.')))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.splitlines() == ["evsed 0.1.0", "[]"]


def test_each_command_module_registers_the_commands_the_parser_imports_it_for():
    import argparse
    import importlib
    for module, names in cli.COMMAND_MODULES.items():
        registered = []
        importlib.import_module(f"evsed.cli.{module}").add_commands(lambda name, *rest: registered.append(name))
        assert tuple(registered) == names, module
        for name in names:  # a command's parser alone has it, and only it
            commands = next(a for a in cli.parser(name)._actions if isinstance(a, argparse._SubParsersAction))
            assert list(commands.choices) == [name]


def test_every_option_of_every_command_has_help():
    import argparse

    def parsers(p, name="evsed"):
        yield name, p
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub_name, sub in action.choices.items():
                    yield from parsers(sub, f"{name} {sub_name}")

    commands = next(a for a in cli.parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert "probe" in commands
    missing = [f"{name}: {action.option_strings or action.dest}" for command in commands
               for name, p in parsers(cli.parser(command))  # each command as parsed: with its options
               for action in p._actions
               if not isinstance(action, (argparse._HelpAction, argparse._SubParsersAction))
               and not action.help]
    assert missing == []


def test_version_and_help_import_no_commands_heavy_module():
    # `evsed probe`'s options are in its own module (asyncio, the config, hal): only `evsed probe`
    # imports it, not `evsed --version` or `evsed --help` (which listed it at 10x the cost).
    code = ("import sys; before = set(sys.modules)\n"  # a dev install's path hook imports pathlib itself
            "import contextlib, io; from evsed import cli\n"
            "for argv in (['--version'], ['--help']):\n"
            "    with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
            "        cli.main(argv)\n"
            "print(sorted(m for m in sys.modules if m in ('asyncio', 'evsed.cli.probe', 'evsed.config', 'hal')))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"
    assert "--ports-dir" in run("probe", "--help").stdout
