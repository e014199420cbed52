"""Who is at the other end of a control-socket connection, and how many connections each may hold.

A role comes from the socket the daemon handed a service it started (evsed run), or from the
peer's uid (SO_PEERCRED): root and the daemon's own user are the administrator, the users the
config names for the services ([control]) are those services, anyone else in the socket's group
reads only. Quotas per role keep slots for the administrator, so no flood locks the CLI out.
"""

from __future__ import annotations

import pwd
import socket
import struct
from collections import Counter
from dataclasses import dataclass, field
from typing import Mapping

from evsed import protocol as p

MAX_CONNECTIONS = 64  # each costs a file descriptor; the unit's LimitNOFILE leaves room for devices
KEPT_FOR_ADMIN = 16  # of them, only the administrator may take these
QUOTAS = {p.ADMIN: MAX_CONNECTIONS, p.OCPP: 8, p.WEB: 8, p.MQTT: 8, p.PRICES: 4, p.READ: 16}
_PEERCRED = struct.Struct("3i")  # pid, uid, gid


@dataclass(frozen=True)
class Roles:
    """The role of a peer's uid, and the commands the host's config grants a role beyond its own."""

    admin_uids: frozenset[int]
    by_uid: Mapping[int, str]  # a service's user -> its role
    granted: Mapping[str, frozenset[str]] = field(default_factory=dict)  # role -> commands (protocol GRANTABLE)

    def of(self, uid: int | None) -> str:
        if uid is None:
            return p.READ
        if uid in self.admin_uids:
            return p.ADMIN
        return self.by_uid.get(uid, p.READ)


def resolve(users: Mapping[str, str], admin_uids: frozenset[int],
            granted: Mapping[str, frozenset[str]] | None = None) -> tuple[Roles, list[str]]:
    """Roles from the config's users per service (a name, or a uid in digits) and its grants; also
    the users that do not exist (their service, if it connects by uid, reads only)."""
    by_uid: dict[int, str] = {}
    missing = []
    for role, user in users.items():
        uid = user_uid(user)
        if uid is None:
            missing.append(user)
        elif uid not in admin_uids:  # root or the daemon's own user stays the administrator
            by_uid[uid] = role
    return Roles(admin_uids, by_uid, dict(granted or {})), missing


def user_uid(user: str) -> int | None:
    if user.isdigit():
        return int(user)
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        return None


def peer_uid(sock: socket.socket | None) -> int | None:
    """The uid of the process at the other end of a Unix socket (None when the kernel cannot say)."""
    if sock is None:
        return None
    try:
        _, uid, _ = _PEERCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))
    except (OSError, AttributeError, struct.error):
        return None
    return int(uid)


class Quota:
    """Open connections per role: each role at most its quota, the services and readers together
    at most MAX_CONNECTIONS - KEPT_FOR_ADMIN."""

    def __init__(self) -> None:
        self.open: Counter[str] = Counter()

    def admit(self, role: str) -> bool:
        total = sum(self.open.values())
        others = total - self.open[p.ADMIN]
        if total >= MAX_CONNECTIONS or self.open[role] >= QUOTAS[role]:
            return False
        if role != p.ADMIN and others >= MAX_CONNECTIONS - KEPT_FOR_ADMIN:
            return False
        self.open[role] += 1
        return True

    def release(self, role: str) -> None:
        self.open[role] -= 1
