"""Logins for the page: signed session cookies, CSRF tokens tied to them, and the back-off
that makes every wrong password cost time. Time is passed in (monotonic and wall seconds).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass, field

COOKIE = "evsed_session"
MAX_BACKOFF_S = 60.0
MAX_ADDRESSES = 1000  # remembered back-offs; beyond, the half that may try soonest are forgotten


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


@dataclass
class Sessions:
    """Cookies are `expires.nonce.signature`; a logout revokes its nonce until it would expire."""

    secret: bytes
    lifetime_s: float
    revoked: dict[str, float] = field(default_factory=dict)

    def _sign(self, text: str) -> str:
        return _b64(hmac.new(self.secret, text.encode(), hashlib.sha256).digest())

    def issue(self, now: float) -> str:
        body = f"{int(now + self.lifetime_s)}.{_b64(secrets.token_bytes(16))}"
        return f"{body}.{self._sign('session:' + body)}"

    def nonce(self, cookie: str | None, now: float) -> str | None:
        """The session's nonce when the cookie is genuine, unexpired and not logged out."""
        if not cookie or cookie.count(".") != 2:
            return None
        expires, nonce, sig = cookie.split(".")
        if not hmac.compare_digest(sig, self._sign(f"session:{expires}.{nonce}")):
            return None
        if not expires.isdigit() or int(expires) < now or nonce in self.revoked:
            return None
        return nonce

    def revoke(self, cookie: str | None, now: float) -> None:
        nonce = self.nonce(cookie, now)
        if nonce is not None:
            self.revoked = {n: exp for n, exp in self.revoked.items() if exp >= now}
            self.revoked[nonce] = int(cookie.split(".")[0])  # type: ignore[union-attr]

    def csrf(self, nonce: str) -> str:
        return self._sign("csrf:" + nonce)

    def csrf_ok(self, nonce: str, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(token, self.csrf(nonce))


@dataclass
class Backoff:
    """After the n-th wrong password from an address, it may try again after 2^(n-1) s (at most
    a minute). Only that address waits: wrong passwords from many addresses must not lock the
    right one out (the service caps how many checks run or wait at once instead)."""

    failures: dict[str, tuple[int, float]] = field(default_factory=dict)  # address -> (count, next allowed)

    def wait_s(self, address: str, now: float) -> float:
        """How long this address must still wait before its next try (0: go ahead)."""
        return max(0.0, self.failures.get(address, (0, 0.0))[1] - now)

    def failed(self, address: str, now: float) -> float:
        count = self.failures.get(address, (0, 0.0))[0] + 1
        delay = min(MAX_BACKOFF_S, 2.0 ** (count - 1))
        self.failures[address] = (count, now + delay)
        if len(self.failures) > MAX_ADDRESSES:  # forget the oldest addresses, not the hot ones
            for old in sorted(self.failures, key=lambda a: self.failures[a][1])[:500]:
                del self.failures[old]
        return delay

    def succeeded(self, address: str) -> None:
        self.failures.pop(address, None)
