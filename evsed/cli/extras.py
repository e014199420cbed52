"""What a config needs installed beyond evsed's own dependencies: the extra of each service it
runs ([ocpp], [mqtt], [web]) and the packages its device backends import (lgpio, spidev, mfrc522,
evdev: the [pi] extra), looked up in the installed metadata without importing any of them.

`check`, `run`, `service` and `install` refuse a config that needs what is missing (exit 2),
naming the extra and the pip command that installs it; `install` offers to run that command.
"""

from __future__ import annotations

import importlib.metadata
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from evsed.config import Config, backends
from evsed.errors import ConfigError
from evsed.shell import devices


@dataclass(frozen=True)
class Need:
    """Packages one part of the config needs that this environment lacks."""

    part: str  # "[ocpp]", "connector 1 pilot (gpio)"
    line: int | None  # where the config has it, when known
    packages: tuple[str, ...]  # the missing distributions
    extra: str | None  # evsed's extra that brings them; None: none does


class MissingPackages(ConfigError):
    """The config needs packages that are not installed; str() names each part, its extra and
    the one pip command for all of them."""

    def __init__(self, path: Path, needs: list[Need]):
        self.needs, self.command = needs, pip_command(needs)
        first, *rest = needs
        lines = [_describe(n) for n in rest] + [f"install with: {shlex.join(self.command)}"]
        super().__init__(path, first.line, first.part, "\n".join([_describe(first, head=False), *lines]))


def _describe(need: Need, head: bool = True) -> str:
    what = ", ".join(need.packages) + (" is" if len(need.packages) == 1 else " are")
    extra = f"the extra [{need.extra}]" if need.extra else "packages no extra of evsed brings"
    text = f"needs {extra}: {what} not installed"
    return f"  {need.part}: {text}" if head else text


def missing(config: Config, services: Iterable[str] | None = None, with_devices: bool = True) -> list[Need]:
    """What the config's services (default: those it runs) and devices need and lack."""
    extras = requirements()
    needs = []
    for name in config.services() if services is None else services:
        lacking = tuple(p for p in (_name(r) for r in extras.get(name, [])) if not installed(p))
        if lacking:
            needs.append(Need(f"[{name}]", config.sections[name].table().line(), lacking, name))
    for connector_id, kind, device in devices.configured(config) if with_devices else ():
        registry_kind = devices.REGISTRY_KIND.get(kind, kind)
        lacking = tuple(p for p in backends.packages(registry_kind, device.backend, device.options) if not installed(p))
        if lacking:
            where = f"connector {connector_id} {kind}" if connector_id else _CHARGER_DEVICES.get(kind, kind)
            needs.append(Need(f"{where} (backend {device.backend!r})", None, lacking, _extra_of(lacking, extras)))
    return needs


_CHARGER_DEVICES = {"rfid": "card reader", "site_meter": "site meter", "site_input": "site input"}


def refuse_missing(config: Config, services: Iterable[str] | None = None, with_devices: bool = True) -> None:
    """Raise MissingPackages when the config needs what is not installed."""
    needs = missing(config, services, with_devices)
    if needs:
        raise MissingPackages(config.path, needs)


def pip_command(needs: list[Need]) -> list[str]:
    """This environment's pip installing every missing extra whole (its requirements as evsed's
    metadata bounds them) and the packages no extra brings."""
    extras = requirements()
    wanted: list[str] = []
    for need in needs:
        for req in extras[need.extra] if need.extra in extras else need.packages:
            if req not in wanted:
                wanted.append(req)
    python = Path(sys.prefix) / "bin" / "python"  # the environment's plain name (the script's may be python3.11)
    return [str(python) if python.exists() else sys.executable, "-m", "pip", "install", *wanted]


_REQUIREMENT = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?([^;]*)(?:;(.*))?")
_EXTRA_MARKER = re.compile(r"""\bextra\s*==\s*["']([^"']+)["']""")


def requirements() -> dict[str, list[str]]:
    """evsed's extras and their requirements ("ocpp>=2.0"), from the installed metadata."""
    try:
        reqs = importlib.metadata.requires("evsed") or []
    except importlib.metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return {}
    out: dict[str, list[str]] = {}
    for req in reqs:
        match = _REQUIREMENT.match(req)
        extra = _EXTRA_MARKER.search(match.group(3) or "") if match else None
        if match and extra and _name(match.group(1)) != "evsed":
            out.setdefault(extra.group(1), []).append(f"{match.group(1)}{match.group(2).strip()}")
    return out


def _name(requirement: str) -> str:
    match = _REQUIREMENT.match(requirement)
    return match.group(1) if match else requirement


def _extra_of(packages: tuple[str, ...], extras: dict[str, list[str]]) -> str | None:
    wanted = {_canonical(p) for p in packages}
    for extra, reqs in extras.items():
        if extra != "test" and wanted <= {_canonical(_name(r)) for r in reqs}:
            return extra
    return None


def installed(package: str) -> bool:
    try:
        importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()
