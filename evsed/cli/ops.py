"""`evsed install`, `evsed uninstall` and `evsed update`: put evsed on a board as a hardened
service, take it off again (keeping the sessions), and move it to a signed new release."""

from __future__ import annotations

import argparse
import sys

from evsed.cli import where

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (2 ms of `evsed status`)
if TYPE_CHECKING:
    from typing import Callable

EXIT_FAILURE = 1
EXIT_USAGE = 2


def add_commands(add: Callable[..., None]) -> None:
    """Register install, uninstall and update; `add(name, func, help, options)`."""
    add("install", cmd_install, "install evsed as a systemd service: users, units, config, enable",
        "ops:install_options")
    add("uninstall", cmd_uninstall, "stop and remove the service; keeps the sessions database and config",
        lambda sp: sp.add_argument("--root", default="/", help="act inside this directory (default: /)"))
    add("update", cmd_update, "install a signed release beside the running one and switch to it between "
        "sessions; switch back if it does not start or fails in its probation", _update_options)


def install_options(sp: argparse.ArgumentParser) -> None:
    """`evsed install`'s options: built only when it is the command parsed (the examples are named
    by evsed.ops.install, which imports the config)."""
    from evsed.ops import install
    sp.add_argument("--root", default="/", help="act inside this directory; user and systemctl commands are "
                    "printed, not run (default: /)")
    sp.add_argument("--config-example", metavar="NAME",
                    help="the example config to start from when /etc/evsed/evsed.toml does not exist yet "
                    f"({', '.join(install.example_names())})")


def _update_options(sp: argparse.ArgumentParser) -> None:
    from pathlib import Path  # here: registering these commands must not cost `evsed status` the import
    sp.add_argument("wheel", type=Path, nargs="?", help="the release: an evsed wheel file")
    sp.add_argument("--signature", type=Path,
                    help="its signature (raw or base64) by the key named in [update] public_key_file")
    sp.add_argument("--spool", nargs="?", const="", default=None, metavar="DIR",
                    help="instead of WHEEL: the release the OCPP uplink downloaded into DIR (default: "
                    "<state_dir>/services/update), if it left a request; the outcome goes to DIR/status.json")
    sp.add_argument("--wait", type=float, default=None, metavar="SECONDS",
                    help="wait this long for a running session to end (default: refuse at once; "
                    "with --spool a week)")
    sp.add_argument("--allow-downgrade", action="store_true",
                    help="install the release even when it is older than the running one (refused otherwise: "
                    "an old release, however well signed, may have a hole the running one closed)")


def cmd_install(args: argparse.Namespace) -> int:
    from evsed.cli import extras, run
    from pathlib import Path

    from evsed.ops import install
    host = install.Host(Path(args.root))
    try:
        cfg = install.planned_config(host, args.config_example)
    except install.InstallError as exc:
        print(f"evsed: install: {exc}", file=sys.stderr)
        return EXIT_USAGE
    # What `evsed run` would refuse is not installed as a service. Under another root the files the
    # service sections name are in that root, not here: only the packages are checked then.
    check = run.validate if host.live else extras.refuse_missing
    try:
        check(cfg)
    except extras.MissingPackages as exc:
        if not _offer(exc):
            return EXIT_USAGE
        check(cfg)
    try:
        cfg = install.install(host, args.config_example)
    except install.InstallError as exc:
        _report(host)
        print(f"evsed: install: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    _report(host)
    print("next:")
    for step in install.next_steps(cfg):
        print(f"  {step}")
    return 0


def _offer(missing) -> bool:
    """Say what is missing; on a terminal, offer to run the pip command. True once installed."""
    print(f"evsed: {missing}", file=sys.stderr)
    if not sys.stdin.isatty():
        return False
    import shlex
    import subprocess
    try:
        answer = input(f"run {shlex.join(missing.command)} now? [y/N] ")
    except EOFError:
        return False
    if answer.strip().lower() not in ("y", "yes"):
        return False
    if subprocess.run(missing.command).returncode != 0:
        print("evsed: install: pip failed; nothing was installed as a service", file=sys.stderr)
        return False
    import importlib
    importlib.invalidate_caches()  # the new packages' metadata, for the check that follows
    return True


def cmd_uninstall(args: argparse.Namespace) -> int:
    from pathlib import Path

    from evsed.ops import install
    host = install.Host(Path(args.root))
    try:
        install.uninstall(host)
    except install.InstallError as exc:
        _report(host)
        print(f"evsed: uninstall: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    _report(host)
    return 0


def cmd_update(args: argparse.Namespace) -> int:
    from evsed import protocol as p
    from evsed.control import client as control
    from evsed.ops import spool as spoolmod
    from evsed.ops import update

    if (args.spool is None) == (args.wheel is None) or (args.wheel is not None and args.signature is None):
        print("evsed: update: give WHEEL --signature SIG, or --spool [DIR]", file=sys.stderr)
        return EXIT_USAGE
    cfg = where.load(args)

    def status() -> p.StatusReply | None:
        try:
            reply = control.request(cfg.store.runtime_dir, p.Status())
        except control.ControlError:
            return None  # not running: no session to wait for
        return None if isinstance(reply, p.Failure) else reply

    def hold(inoperative: bool) -> p.AvailabilityReply | p.Failure | None:
        try:
            return control.request(cfg.store.runtime_dir, p.Availability(connector=0, operative=not inoperative, hold=True))
        except control.ControlError:
            return None

    updater = update.Updater(cfg, update.settings(cfg), update.SystemdService(print), status, hold=hold,
                             allow_downgrade=args.allow_downgrade)
    try:
        if args.spool is None:
            updater.update(args.wheel, args.signature, args.wait or 0.0)
            return 0
        from pathlib import Path

        from evsed import dirs
        spool = Path(args.spool) if args.spool else spoolmod.directory(dirs.services_dir(cfg.store.state_dir))
        outcome = updater.run_spool(spool, update.SPOOL_WAIT_S if args.wait is None else args.wait)
    except update.UpdateError as exc:
        print(f"evsed: update: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_FAILURE if outcome is not None and outcome.result != "Installed" else 0


def _report(host) -> None:
    for line in host.did:
        print(line)
