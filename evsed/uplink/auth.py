"""The uplink's link in the daemon's authorizer chain, whatever the OCPP version: the local list
and the authorization cache (persisted in the state), Authorize online through the version's
adapter, and the offline rules (LocalPreAuthorize, LocalAuthorizeOffline, AllowOfflineTxForUnknownId).

An id tag's info is kept in one form for every version: {"status", "expiryDate", "parentIdTag"}
(camelCase, empty fields left out), the 1.6 idTagInfo's."""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Protocol

import structlog

from evsed import protocol as p
from evsed.uplink.state import State
from evsed.uplink.times import parse_time

log = structlog.get_logger("evsed.uplink")
Info = dict[str, Any]  # {"status", "expiryDate", "parentIdTag"}


class AuthPolicy(Protocol):
    """The configuration the chain follows (the version's keys or variables, read at each use)."""

    def local_list_enabled(self) -> bool: ...
    def cache_enabled(self) -> bool: ...
    def local_pre_authorize(self) -> bool: ...
    def local_authorize_offline(self) -> bool: ...
    def allow_offline_unknown(self) -> bool: ...
    def local_list_max(self) -> int: ...
    def update_max(self) -> int: ...


def valid(info: Info, now: float) -> bool:
    """An id tag's info that lets a transaction start now."""
    if info.get("status") != "Accepted":
        return False
    try:
        return "expiryDate" not in info or parse_time(info["expiryDate"]) > now
    except ValueError:
        return False


def answer(request: p.AuthorizeRequest, info: Info, now: float, source: str) -> p.Authorized:
    """The daemon's authorized reply for an id tag's info."""
    if valid(info, now):
        return p.Authorized(authorize=request.authorize, result="accept", reason=source,
                            valid_until=info.get("expiryDate"), parent_id_tag=info.get("parentIdTag") or None)
    status = info.get("status", "Invalid")
    return p.Authorized(authorize=request.authorize, result="reject",
                        reason=f"{source}: {'Expired' if status == 'Accepted' else status}")


class AuthStore:
    """The local list (the CSMS's, with its version) and the cache of answers the CSMS gave."""

    def __init__(self, state: State, policy: AuthPolicy):
        self.state, self.policy = state, policy

    def lookup(self, tag: str) -> tuple[Info | None, str]:
        """The local list's entry, else the cache's (each only when enabled); and which it was."""
        if self.policy.local_list_enabled():
            entry = self.state.auth_entry("local_list", tag)
            if entry is not None:
                return entry, "local list"
        if self.policy.cache_enabled():
            entry = self.state.auth_entry("cache", tag)
            if entry is not None:
                return entry, "cache"
        return None, ""

    def remember(self, tag: str, info: Info | None) -> None:
        """Every id tag info the CSMS sends updates the cache (ids of the local list excepted)."""
        if info is None or not self.policy.cache_enabled():
            return
        if self.state.auth_entry("local_list", tag) is not None:
            return
        self.state.put_auth("cache", tag, info)

    def clear_cache(self) -> None:
        self.state.clear_auth("cache")

    def list_version(self) -> int:
        return int(self.state.meta("local_list_version", "0"))

    def update_list(self, version: int, full: bool, entries: list[tuple[str, Info | None]]) -> str:
        """SendLocalList: Accepted, Failed, NotSupported or VersionMismatch. An entry without info
        is removed (a differential update)."""
        if not self.policy.local_list_enabled():
            return "NotSupported"
        if len(entries) > self.policy.update_max():
            return "Failed"
        if not full and version <= self.list_version():
            return "VersionMismatch"
        try:
            with self.state.transaction():
                if full:
                    self.state.clear_auth("local_list")
                for tag, info in entries:
                    self.state.put_auth("local_list", tag, info)
                if self.state.count("local_list") > self.policy.local_list_max():
                    raise OverflowError("local list too long")
                self.state.set_meta("local_list_version", version)
        except OverflowError:
            return "Failed"
        log.info("ocpp.local_list_updated", version=version, full=full, entries=len(entries))
        return "Accepted"


class Authorizer:
    """Answers the daemon's authorization requests (AuthorizeRequest -> Authorized)."""

    def __init__(self, store: AuthStore, policy: AuthPolicy, clock: Callable[[], float],
                 online: Callable[[], bool], ask: Callable[[str], Awaitable[Info | None]], max_len: int):
        self.store, self.policy, self.clock = store, policy, clock
        self.online, self.ask = online, ask   # ask: Authorize at the CSMS, None when unanswered
        self.max_len = max_len                # the version's IdToken length

    async def __call__(self, request: p.AuthorizeRequest) -> p.Authorized:
        tag = request.id_tag
        if not 1 <= len(tag) <= self.max_len:
            return p.Authorized(authorize=request.authorize, result="reject",
                                reason=f"id tag is not 1-{self.max_len} characters (OCPP IdToken)")
        now = self.clock()
        entry, source = self.store.lookup(tag)
        if self.online():
            if entry is not None and self.policy.local_pre_authorize() and valid(entry, now):
                return answer(request, entry, now, source)
            info = await self.ask(tag)
            if info is not None:
                self.store.remember(tag, info)
                return answer(request, info, now, "csms")
        if entry is not None and self.policy.local_authorize_offline():
            return answer(request, entry, now, f"{source} (offline)")
        if self.policy.allow_offline_unknown():
            return p.Authorized(authorize=request.authorize, result="accept",
                                reason="offline: AllowOfflineTxForUnknownId")
        return p.Authorized(authorize=request.authorize, result="unknown", reason="csms unreachable")
