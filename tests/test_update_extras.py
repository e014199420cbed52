"""`evsed update` installs the new release with the extras the running one has ([pi], [ocpp],
[mqtt], [web]): a board keeps its card reader and its uplink across an update."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from evsed.ops import update
from test_update import GOOD, make_wheel, signed, site  # noqa: F401 - site is a fixture

EVSED_METADATA = """Metadata-Version: 2.1
Name: evsed
Version: 0.1.0
Provides-Extra: web
Provides-Extra: ocpp
Provides-Extra: pi
Provides-Extra: test
Requires-Dist: structlog>=24.1
Requires-Dist: h11>=0.16; extra == "web"
Requires-Dist: ocpp>=2.0; extra == "ocpp"
Requires-Dist: websockets>=15; extra == "ocpp"
Requires-Dist: mfrc522>=0.0.7; extra == "pi"
Requires-Dist: pytest>=8.0; extra == "test"
Requires-Dist: evsed[ocpp]; extra == "test"
"""


def installed(site_packages: Path, name: str, version: str = "1.0", metadata: str = "") -> None:
    """A distribution as pip leaves it in site-packages (its .dist-info)."""
    info = site_packages / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(metadata or f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")


def test_an_extra_is_carried_over_when_all_its_requirements_are_installed(tmp_path):
    installed(tmp_path, "evsed", "0.1.0", EVSED_METADATA)
    for name in ("structlog", "h11", "ocpp", "pytest"):
        installed(tmp_path, name)
    assert update.carried_extras(tmp_path) == ["web"]  # [ocpp] lacks websockets, so [test] lacks evsed[ocpp]
    installed(tmp_path, "websockets")
    assert update.carried_extras(tmp_path) == ["ocpp", "test", "web"]


def test_no_evsed_installed_carries_no_extra(tmp_path):
    installed(tmp_path, "h11")
    assert update.carried_extras(tmp_path) == []


def test_the_new_release_is_installed_with_the_extras_of_the_running_one(site, tmp_path):
    updater, key, service, said = site
    old = updater.opt / "releases/0.1.0"  # the running release, with evsed[web] in it
    purelib = subprocess.run([str(old / "bin/python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                             capture_output=True, text=True, check=True).stdout.strip()
    shutil.rmtree(Path(purelib) / "evsed-0.1.0.dist-info")
    installed(Path(purelib), "evsed", "0.1.0", EVSED_METADATA)
    installed(Path(purelib), "h11", "0.16.0")
    wheel = make_wheel(tmp_path, "0.3.0", GOOD, 'Provides-Extra: web\nRequires-Dist: h11>=0.16; extra == "web"\n')
    assert updater.update(wheel, signed(key, wheel)) == "0.3.0"
    assert any(s.endswith("with the extras the running release has: web") for s in said)
    new = updater.opt / "releases/0.3.0/bin/python"
    assert subprocess.run([str(new), "-c", "import h11"], capture_output=True).returncode == 0  # pip installed [web]
