"""`evsed install`, `evsed uninstall` and `evsed update`: put evsed on a board as a hardened
service, take it off again (keeping the sessions), and move it to a signed new release."""

from __future__ import annotations

import sys
from pathlib import Path

EXIT_FAILURE = 1


def add_commands(add) -> None:
    """Register the commands on the `evsed` parser; `add(name, func, help)` makes a subparser."""
    sp = add("install", cmd_install, "install evsed as a systemd service: users, units, config, enable")
    sp.add_argument("--root", default="/", help="act inside this directory; user and systemctl commands are "
                    "printed, not run (default: /)")
    sp.add_argument("--config-example", default="simulator", metavar="NAME",
                    help="the example config put in place when /etc/evsed/evsed.toml does not exist "
                    "(simulator, pi-gpio-sdm630-rc522, openevse-sdm120-tcp)")
    sp = add("uninstall", cmd_uninstall, "stop and remove the service; keeps the sessions database and config")
    sp.add_argument("--root", default="/", help="act inside this directory (default: /)")


def cmd_install(args) -> int:
    from evsed.ops import install
    host = install.Host(Path(args.root))
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


def cmd_uninstall(args) -> int:
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


def _report(host) -> None:
    for line in host.did:
        print(line)
