"""`evsed run`, `evsed service` and `evsed check`: the commands that start what the config
describes, and so refuse alike what cannot run (exit 2): a service section its own parser
refuses, and a service or device whose packages are not installed."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from evsed.cli import extras, where
from evsed.config import Config

EXIT_FAILURE = 1


def validate(config: Config, services: list[str] | None = None, with_devices: bool = True) -> None:
    """What `check` refuses and `run` must refuse too: errors in [ocpp], [mqtt], [web] and
    [update] (each read by its own process, checked here by its own parser), and missing
    packages. Raises ConfigError (exit 2)."""
    from evsed.ops import update
    from evsed.services.run import check_sections
    update.settings(config)  # [update] is read by `evsed update` and the OCPP uplink
    check_sections(config)
    extras.refuse_missing(config, services, with_devices)


def cmd_run(args: argparse.Namespace) -> int:
    cfg = where.load(args)
    validate(cfg)
    from evsed.shell import logs
    from evsed.errors import StartError
    from evsed.shell.daemon import Daemon
    from hal import DeviceUnavailable
    logs.configure(cfg.log.level, cfg.log.format)
    try:
        # Under systemd the services are units of their own (systemd/README.md), not children.
        return asyncio.run(Daemon(cfg, start_services=os.environ.get("EVSED_SERVICES") != "units").run())
    except (StartError, DeviceUnavailable) as exc:
        logs.flush()
        print(f"evsed: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    finally:
        logs.flush()


def cmd_service(args: argparse.Namespace) -> int:
    cfg = where.load(args)
    extras.refuse_missing(cfg, [args.name] if args.name in cfg.sections else [], with_devices=False)
    from evsed.services.run import ServiceError, run
    from evsed.shell import logs
    logs.configure(cfg.log.level, cfg.log.format)
    try:
        return asyncio.run(run(cfg, args.name))
    except ServiceError as exc:
        logs.flush()
        print(f"evsed: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    finally:
        logs.flush()


def cmd_check(args: argparse.Namespace) -> int:
    cfg = where.load(args)
    validate(cfg)
    from evsed.cli import check
    from evsed.shell import logs
    logs.configure("error", "text")  # the report is the output
    try:
        return check.main(cfg, args.json)
    finally:
        logs.flush()
