"""The update spool (`<state_dir>/services/update/`): where the unprivileged OCPP uplink leaves a release it
downloaded, and where the privileged `evsed update --spool` leaves the outcome.

The uplink writes `evsed-VERSION-....whl`, its `.sig` and then `request.json`; the updater writes
`status.json`. Every file appears whole (a temporary name, fsync, rename, fsync of the directory).
The directory belongs to the uplink's user, so the root side touches it only through a descriptor
of the directory opened without following a link, and never follows a link inside it. Every
service may write the services' directory it sits in, so each side checks the spool's owner: a
spool another service made first (to plant a request or fake an outcome) is refused by both.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import secrets
import stat
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO, Collection, Iterator

REQUEST, STATUS = "request.json", "status.json"
MAX_WHEEL_BYTES = 64 * 2**20  # an evsed wheel is well under 1 MiB; its dependencies come from pip
MAX_SIGNATURE_BYTES = 16 * 2**10  # Ed25519: 64 bytes, ECDSA P-256 DER: about 72, base64 a third more
MAX_JSON_BYTES = 16 * 2**10
RESULTS = ("Installed", "InstallationFailed")  # OCPP 1.6 FirmwareStatus names
WHEEL_NAME = re.compile(r"^evsed-(?P<version>[0-9][A-Za-z0-9.+!_]*)-[^-/]+-[^-/]+-[^-/]+\.whl$")
_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
UPLINK_USER = "evsed-ocpp"  # the OCPP uplink's own user (evsed.ops.install.service_user("ocpp"))


class SpoolError(Exception):
    """A spool file that is missing, too big, not a regular file, or not what it should say."""


@dataclass(frozen=True)
class Request:
    """What the uplink asks for: install `wheel`, signed by `signature`, both in the spool."""

    id: str
    wheel: str
    location: str = ""  # where it came from, for the logs
    requested_at: str = ""

    @property
    def signature(self) -> str:
        return self.wheel + ".sig"

    @property
    def version(self) -> str:
        match = WHEEL_NAME.match(self.wheel)
        assert match  # checked by parse_request
        return match.group("version")


@dataclass(frozen=True)
class Outcome:
    """What the updater did with request `id`: Installed or InstallationFailed, and why."""

    id: str
    version: str
    result: str
    reason: str = ""
    at: str = ""


def directory(services_dir: Path) -> Path:
    """The spool in the services' directory (evsed.dirs.services_dir of the state directory)."""
    return services_dir / "update"


def parse_request(data: bytes) -> Request:
    body = _json(data, "request")
    ident, wheel = body.get("id"), body.get("wheel")
    if not isinstance(ident, str) or not _ID.match(ident):
        raise SpoolError("request: id: expected 1-64 letters, digits, '-' or '_'")
    if not isinstance(wheel, str) or not WHEEL_NAME.match(wheel):
        raise SpoolError(f"request: wheel: expected a file name evsed-VERSION-py3-none-any.whl, got {wheel!r:.80}")
    return Request(ident, wheel, str(body.get("location", ""))[:512], str(body.get("requested_at", ""))[:40])


def parse_outcome(data: bytes) -> Outcome:
    body = _json(data, "status")
    ident, result = body.get("id"), body.get("result")
    if not isinstance(ident, str) or not _ID.match(ident) or result not in RESULTS:
        raise SpoolError(f"status: expected an id and a result ({', '.join(RESULTS)})")
    return Outcome(ident, str(body.get("version", ""))[:50], str(result), str(body.get("reason", ""))[:500],
                   str(body.get("at", ""))[:40])


def encode(value: Request | Outcome) -> bytes:
    return (json.dumps(asdict(value), indent=1) + "\n").encode()


def _json(data: bytes, what: str) -> dict:
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SpoolError(f"{what}: not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise SpoolError(f"{what}: expected a JSON object")
    return body


def new_id() -> str:
    return secrets.token_hex(8)


def updater_owners() -> set[int]:
    """Who may own the spool the updater reads: the uplink's user, or the updater's own (root,
    or the one user a simple install runs everything as)."""
    owners = {0, os.geteuid()}
    try:
        owners.add(pwd.getpwnam(UPLINK_USER).pw_uid)
    except KeyError:  # no system users: everything runs as one
        pass
    return owners


class Spool:
    """One spool directory, held by a descriptor: every name below is a plain name in it, and
    none is followed when it is a link. A context manager.

    create: the uplink's side: made 0700 when missing, and then it must be this user's own.
    owners: the uids one of which must own it (updater_owners() on the updater's side); with
    either, a spool that others may write is refused too. Neither: a directory named by hand.
    """

    def __init__(self, path: Path, create: bool = False, owners: Collection[int] = ()):
        self.path = path
        if create:
            owners = (os.geteuid(),)
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.mkdir(path, 0o700)  # the uplink's own; root reads it by its capabilities
            except FileExistsError:
                pass
        try:
            self.fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            raise SpoolError(f"{path}: {exc.strerror or exc} (expected a directory, not a link)") from None
        if owners:
            problem = _not_owned(os.fstat(self.fd), owners)
            if problem:
                os.close(self.fd)
                raise SpoolError(f"{path}: {problem}")

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def names(self) -> list[str]:
        return sorted(os.listdir(self.fd))

    def exists(self, name: str) -> bool:
        try:
            os.stat(_plain(name), dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        return True

    def open_regular(self, name: str, limit: int) -> int:
        """A read descriptor of `name`, a regular file of at most `limit` bytes (never a link,
        a FIFO or a device). The caller closes it."""
        try:
            fd = os.open(_plain(name), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=self.fd)
        except FileNotFoundError:
            raise SpoolError(f"{self.path / name}: missing") from None
        except OSError as exc:
            raise SpoolError(f"{self.path / name}: {exc.strerror or exc} (a link is not followed)") from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > limit:
            os.close(fd)
            raise SpoolError(f"{self.path / name}: expected a regular file of at most {limit} bytes")
        return fd

    def read(self, name: str, limit: int = MAX_JSON_BYTES) -> bytes:
        fd = self.open_regular(name, limit)
        with os.fdopen(fd, "rb") as f:
            data = f.read(limit + 1)
        if len(data) > limit:
            raise SpoolError(f"{self.path / name}: more than {limit} bytes")
        return data

    def copy_out(self, name: str, target: Path, limit: int) -> Path:
        """Copy `name` to `target` (a new file in a directory only the caller can write)."""
        fd = self.open_regular(name, limit)
        copied = 0
        with os.fdopen(fd, "rb") as src, open(target, "xb") as dst:
            while chunk := src.read(65536):
                copied += len(chunk)
                if copied > limit:
                    raise SpoolError(f"{self.path / name}: more than {limit} bytes")
                dst.write(chunk)
        return target

    def write(self, name: str, data: bytes, mode: int = 0o644) -> None:
        """`name` appears with all of `data` or not at all, even across a power cut."""
        with self.writing(name, mode) as f:
            f.write(data)

    @contextlib.contextmanager
    def writing(self, name: str, mode: int = 0o644) -> Iterator[BinaryIO]:
        """A file to write `name` into: under a temporary name until the block ends, then synced
        and renamed to `name`; removed when the block raises."""
        tmp = f".{_plain(name)}.{secrets.token_hex(4)}.part"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode,
                     dir_fd=self.fd)
        try:
            with os.fdopen(fd, "wb") as f:
                yield f
                f.flush()
                os.fchmod(f.fileno(), mode)  # the umask does not decide who may read it
                os.fsync(f.fileno())
            os.rename(tmp, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        except BaseException:
            self.remove(tmp)
            raise
        os.fsync(self.fd)

    def remove(self, name: str) -> bool:
        try:
            os.unlink(_plain(name), dir_fd=self.fd)
        except FileNotFoundError:
            return False
        return True


def _not_owned(st: os.stat_result, owners: Collection[int]) -> str | None:
    """Why a spool with this stat is not the uplink's (None: it is)."""
    if st.st_uid not in owners:
        return (f"owned by uid {st.st_uid}, not by the OCPP uplink ({UPLINK_USER}) or the updater: another "
                "service may have made it first; remove it and let the uplink make it again")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"writable by others than its owner (mode {stat.S_IMODE(st.st_mode):04o}): chmod go-w it"
    return None


def _plain(name: str) -> str:
    if not name or "/" in name or name in (".", ".."):
        raise SpoolError(f"{name!r:.80}: expected a plain file name")
    return name
