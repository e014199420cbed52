"""What a release is before it runs: its wheel's name and signature, whether it is older than the
running one, and the version and extras an installed release's environment has (the next one is
installed with the same extras).
"""

from __future__ import annotations

import base64
import binascii
import importlib.metadata
import re
import subprocess
from pathlib import Path

from evsed.ops import spool as spoolmod


class UpdateError(Exception):
    pass


def verify(wheel: Path, signature: Path, public_key: Path, shown: str | None = None) -> None:
    """Raise UpdateError unless `signature` (raw or base64; Ed25519, or ECDSA with SHA-256 in DER)
    signs the wheel's bytes under the PEM public key."""
    # imported here: the OCPP uplink reads [update] at start but verifies only when a release comes
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    try:
        key = serialization.load_pem_public_key(public_key.read_bytes())
    except (OSError, ValueError) as exc:
        raise UpdateError(f"public key {public_key}: {exc}") from None
    sig = signature.read_bytes()
    candidates = [sig]
    try:
        candidates.append(base64.b64decode(sig.strip(), validate=True))
    except (binascii.Error, ValueError):
        pass
    data = wheel.read_bytes()
    for candidate in candidates:
        try:
            if isinstance(key, ed25519.Ed25519PublicKey):
                key.verify(candidate, data)
            elif isinstance(key, ec.EllipticCurvePublicKey):
                key.verify(candidate, data, ec.ECDSA(hashes.SHA256()))
            else:
                raise UpdateError(f"public key {public_key}: expected Ed25519 or ECDSA, got {type(key).__name__}")
            return
        except InvalidSignature:
            continue
    raise UpdateError(f"{shown or signature} is not a valid signature of {wheel.name} by {public_key}")


def wheel_version(wheel: Path) -> str:
    match = spoolmod.WHEEL_NAME.match(wheel.name)
    if not match:
        raise UpdateError(f"{wheel.name}: expected an evsed wheel, evsed-VERSION-py3-none-any.whl")
    return match.group("version")


def running_release(old: Path) -> tuple[str | None, list[str]]:
    """The version of the release installed in the environment `old` (None: it has no evsed),
    and its extras (a Pi's [pi], [ocpp], ...). Its python runs with -P: from whatever folder the
    updater (root) was started in, no module there may stand in."""
    proc = subprocess.run([str(old / "bin" / "python"), "-P", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise UpdateError(f"{old}/bin/python: exit {proc.returncode}: {proc.stderr.strip()[-500:]}: "
                          "cannot tell which version and extras the running release has")
    site_packages = Path(proc.stdout.strip())
    return installed_version(site_packages), carried_extras(site_packages)


def installed_version(site_packages: Path) -> str | None:
    """The version of the evsed installed in site_packages (None: none is)."""
    for dist in importlib.metadata.distributions(path=[str(site_packages)]):
        if _canonical(dist.metadata["Name"] or "") == "evsed":
            return dist.version
    return None


def check_not_older(version: str, running: str | None, allow_downgrade: bool) -> None:
    """Raise UpdateError when release `version` is older than the `running` one (PEP 440 order)
    and a downgrade was not asked for: an old release, however well signed, may have the hole
    the running one closed. An unknown running version counts as newer."""
    from packaging.version import InvalidVersion, Version

    if allow_downgrade:
        return
    how = "run `evsed update --allow-downgrade` by hand to install it anyway"
    if running is None:
        raise UpdateError(f"cannot tell which evsed version runs, so release {version} may be older: {how}")
    try:
        older = Version(version) < Version(running)
    except InvalidVersion as exc:
        raise UpdateError(f"cannot order release {version} after the running {running} ({exc}): {how}") from None
    if older:
        raise UpdateError(f"release {version} is older than the running {running}: refused; {how}")


def carried_extras(site_packages: Path) -> list[str]:
    """The extras of the evsed installed in site_packages whose requirements are all installed
    there too, sorted: the ones that release runs with. Only a requirement's name counts (pip
    resolves the versions anew in the fresh environment), and of its marker only `extra == "..."`:
    a requirement for another platform that is missing here leaves its extra behind."""
    dists = {_canonical(d.metadata["Name"] or ""): d
             for d in importlib.metadata.distributions(path=[str(site_packages)])}
    evsed = dists.get("evsed")
    if evsed is None:
        return []
    needs: dict[str, list[tuple[str, list[str]]]] = {e: [] for e in evsed.metadata.get_all("Provides-Extra") or []}
    for req in evsed.requires or []:
        match = _REQUIREMENT.match(req)
        extra = _EXTRA_MARKER.search(match.group(3) or "") if match else None
        if match and extra and extra.group(1) in needs:
            inner = [e.strip() for e in (match.group(2) or "").split(",") if e.strip()]
            needs[extra.group(1)].append((_canonical(match.group(1)), inner))

    def installed(extra: str, seen: frozenset[str]) -> bool:
        for name, inner in needs.get(extra, [("", [])]):  # an extra evsed does not provide: not installed
            if name not in dists:
                return False
            if name == "evsed" and not all(e in seen or installed(e, seen | {e}) for e in inner):
                return False  # evsed[web] in [test]: [web]'s requirements too
        return True
    return sorted(e for e in needs if installed(e, frozenset({e})))


_REQUIREMENT = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?[^;]*(?:;(.*))?")
_EXTRA_MARKER = re.compile(r"""\bextra\s*==\s*["']([^"']+)["']""")


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()
