"""The uplink's link in the daemon's authorizer chain: the OCPP local list, the authorization
cache and Authorize online, under LocalPreAuthorize, LocalAuthorizeOffline and AllowOfflineTxForUnknownId."""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable

import structlog
from ocpp.exceptions import OCPPError
from ocpp.v16 import call

from evsed.uplink.keys import Values
from evsed.uplink.smart import parse_time
from evsed.uplink.state import State

log = structlog.get_logger("evsed.uplink")


def valid(info: dict, now: float) -> bool:
    """An idTagInfo that lets a transaction start now."""
    if info.get("status") != "Accepted":
        return False
    try:
        return "expiryDate" not in info or parse_time(info["expiryDate"]) > now
    except ValueError:
        return False


def answer(info: dict, now: float, source: str) -> dict:
    """The daemon's authorized reply for an idTagInfo."""
    if valid(info, now):
        reply = {"result": "accept", "reason": source}
        if "expiryDate" in info:
            reply["valid_until"] = info["expiryDate"]
        if info.get("parentIdTag"):
            reply["parent_id_tag"] = info["parentIdTag"]
        return reply
    status = info.get("status", "Invalid")
    return {"result": "reject", "reason": f"{source}: {'Expired' if status == 'Accepted' else status}"}


class Authorizer:
    def __init__(self, state: State, keys: Values, clock: Callable[[], float],
                 online: Callable[[], object | None], timeout_s: float):
        self.state, self.keys, self.clock = state, keys, clock
        self.online = online          # the booted ChargePoint, or None when offline
        self.timeout_s = timeout_s

    def local(self, tag: str) -> tuple[dict | None, str]:
        """The local list's entry, else the cache's (each only when enabled)."""
        if self.keys.bool("LocalAuthListEnabled"):
            entry = self.state.auth_entry("local_list", tag)
            if entry is not None:
                return entry, "local list"
        if self.keys.bool("AuthorizationCacheEnabled"):
            entry = self.state.auth_entry("cache", tag)
            if entry is not None:
                return entry, "cache"
        return None, ""

    async def __call__(self, request: dict) -> dict:
        tag = str(request.get("id_tag", ""))
        if not 1 <= len(tag) <= 20:
            return {"result": "reject", "reason": "id tag is not 1-20 characters (OCPP 1.6 IdToken)"}
        now = self.clock()
        entry, source = self.local(tag)
        cp = self.online()
        if cp is not None:
            if entry is not None and self.keys.bool("LocalPreAuthorize") and valid(entry, now):
                return answer(entry, now, source)
            info = await self.authorize_online(cp, tag)
            if info is not None:
                return answer(info, now, "csms")
        if entry is not None and self.keys.bool("LocalAuthorizeOffline"):
            return answer(entry, now, f"{source} (offline)")
        if self.keys.bool("AllowOfflineTxForUnknownId"):
            return {"result": "accept", "reason": "offline: AllowOfflineTxForUnknownId"}
        return {"result": "unknown", "reason": "csms unreachable"}

    async def authorize_online(self, cp, tag: str) -> dict | None:
        try:
            async with asyncio.timeout(self.timeout_s):
                result = await cp.call(call.Authorize(id_tag=tag), suppress=False)
        except (TimeoutError, OCPPError, ConnectionError) as exc:
            log.info("ocpp.authorize_unanswered", error=type(exc).__name__)
            return None
        except Exception as exc:  # a closed socket or an unreadable answer: treat as offline
            log.info("ocpp.authorize_unanswered", error=type(exc).__name__)
            return None
        info = _camel(result.id_tag_info)
        self.remember(tag, info)
        return info

    def remember(self, tag: str, info: dict | None) -> None:
        """Every idTagInfo the CSMS sends updates the cache (ids of the local list excepted)."""
        if info is None or not self.keys.bool("AuthorizationCacheEnabled"):
            return
        if self.state.auth_entry("local_list", tag) is not None:
            return
        self.state.put_auth("cache", tag, info)

    def send_local_list(self, version: int, update: str, entries: list[dict] | None) -> str:
        """SendLocalList: Accepted, Failed, NotSupported or VersionMismatch."""
        if not self.keys.bool("LocalAuthListEnabled"):
            return "NotSupported"
        entries = entries or []
        if len(entries) > self.keys.int("SendLocalListMaxLength"):
            return "Failed"
        current = int(self.state.meta("local_list_version", "0"))
        if update == "Differential" and version <= current:
            return "VersionMismatch"
        try:
            with self.state.transaction():
                if update == "Full":
                    self.state.clear_auth("local_list")
                for entry in entries:
                    info = entry.get("id_tag_info")
                    self.state.put_auth("local_list", entry["id_tag"], _camel(info) if info else None)
                if self.state.count("local_list") > self.keys.int("LocalAuthListMaxLength"):
                    raise OverflowError("local list too long")
                self.state.set_meta("local_list_version", version)
        except OverflowError:
            return "Failed"
        log.info("ocpp.local_list_updated", version=version, update=update, entries=len(entries))
        return "Accepted"

    def list_version(self) -> int:
        return int(self.state.meta("local_list_version", "0"))


def _camel(info) -> dict:
    """idTagInfo as stored: camelCase, no empty fields (the package hands it in snake_case)."""
    if info is None:
        return {}
    if not isinstance(info, dict):
        info = vars(info)
    names = {"status": "status", "expiry_date": "expiryDate", "parent_id_tag": "parentIdTag"}
    return {names.get(k, k): v for k, v in info.items() if v is not None}
