"""Strict OCPP-J 1.6 framing on top of the ocpp package's ChargePoint: every frame from the CSMS
is checked before a handler sees it, and answered with the CALLERROR OCPP-J 1.6 names, never a crash."""

from __future__ import annotations

import asyncio
import decimal
import inspect
import json
import re
from typing import Any, Callable, TypeVar

import structlog
from ocpp import routing
from ocpp.charge_point import camel_to_snake_case, remove_nones, serialize_as_dict, snake_to_camel_case
from ocpp.exceptions import OCPPError
from ocpp.messages import CallError, CallResult, MessageType, get_validator
from ocpp.v16 import ChargePoint
from ocpp.v16.enums import Action

log = structlog.get_logger("evsed.uplink")
Handler = TypeVar("Handler", bound=Callable[..., Any])

ACTIONS = {a.value for a in Action}
# OCPP-J 1.6 spells two codes its own way (the package raises the 2.0 spellings).
SPELLING = {"FormatViolation": "FormationViolation", "OccurrenceConstraintViolation": "OccurenceConstraintViolation"}
# jsonschema keyword -> OCPP-J 1.6 section 4.2.3 error code
BY_KEYWORD = {"type": "TypeConstraintViolation", "required": "ProtocolError",
              "additionalProperties": "FormationViolation", "minItems": "OccurenceConstraintViolation",
              "maxItems": "OccurenceConstraintViolation"}
DECIMAL_ACTIONS = ("SetChargingProfile", "RemoteStartTransaction")  # limits are multipleOf 0.1


def redact(frame: str) -> str:
    """A frame fit for a log: the value of a ChangeConfiguration AuthorizationKey replaced."""
    if "AuthorizationKey" not in frame:
        return frame
    return re.sub(r'("value"\s*:\s*)"(?:[^"\\]|\\.)*"', r'\1"***"', frame)


class CallRejected(Exception):
    """An inbound CALL answered with a CALLERROR (code, description)."""

    def __init__(self, code: str, description: str):
        super().__init__(f"{code}: {description}")
        self.code, self.description = code, description


def on(action: str) -> Callable[[Handler], Handler]:
    """The package's @on, typed: the handler for a CALL from the CSMS."""
    decorate: Callable[[Handler], Handler] = routing.on(action)
    return decorate


def after(action: str) -> Callable[[Handler], Handler]:
    """The package's @after, typed: what runs once the CALLRESULT is sent."""
    decorate: Callable[[Handler], Handler] = routing.after(action)
    return decorate


def schema_error(action: str, payload: Any, *, response: bool = False) -> CallRejected | None:
    """None when payload fits the official 1.6 schema of action, else the CALLERROR it earns."""
    parse_float = decimal.Decimal if (action in DECIMAL_ACTIONS and not response) or (
        response and action == "GetCompositeSchedule") else float
    kind = MessageType.CallResult if response else MessageType.Call
    validator = get_validator(kind, action, "1.6", parse_float=parse_float)
    if parse_float is decimal.Decimal:
        payload = json.loads(json.dumps(payload, default=str), parse_float=decimal.Decimal)
    errors = sorted(validator.iter_errors(payload), key=lambda e: (len(e.path), str(e.path)))
    if not errors:
        return None
    e = errors[0]
    code = BY_KEYWORD.get(e.validator, "PropertyConstraintViolation")
    where = "/".join(str(p) for p in e.path) or "payload"
    return CallRejected(code, f"{where}: {e.message}"[:200])


class StrictChargePoint(ChargePoint):  # type: ignore[misc]  # the package is untyped
    """The package's ChargePoint with its inbound routing made strict and crash-proof; outbound
    calls (call()) are the package's, validated against the official schemas."""

    def __init__(self, id: str, connection: Any, response_timeout: float = 30):
        super().__init__(id, connection, response_timeout)
        self.malformed = 0            # frames we could not even answer
        self._after: set[asyncio.Task[None]] = set()

    async def route_message(self, raw_msg: Any) -> None:
        try:
            frame = json.loads(raw_msg)
        except (ValueError, TypeError):
            frame = None
        if not isinstance(frame, list) or not frame or type(frame[0]) is not int:
            return self._drop(raw_msg, "not an OCPP-J frame")
        unique_id = frame[1] if len(frame) > 1 and isinstance(frame[1], str) else None
        kind = frame[0]
        if kind in (MessageType.CallResult, MessageType.CallError):
            return await self._response(frame, raw_msg)
        if unique_id is None or len(unique_id) > 36:
            return self._drop(raw_msg, "no usable unique id")
        if kind != MessageType.Call:
            return await self._error(unique_id, CallRejected("FormationViolation", f"message type {kind}"))
        if len(frame) != 4 or not isinstance(frame[2], str) or not isinstance(frame[3], dict):
            return await self._error(unique_id, CallRejected(
                "FormationViolation", "a CALL is [2, uniqueId, action, {payload}]"))
        await self._call(unique_id, frame[2], frame[3])

    async def start(self) -> None:
        """The receive loop; frames are logged at debug level only, a password redacted."""
        while True:
            message = await self._connection.recv()
            log.debug("ocpp.received", frame=redact(str(message))[:1000])
            await self.route_message(message)

    async def _send(self, message: str) -> None:
        log.debug("ocpp.sent", frame=redact(message)[:1000])
        await self._connection.send(message)

    def _drop(self, raw: Any, why: str) -> None:
        self.malformed += 1
        log.warning("ocpp.frame_dropped", why=why, frame=redact(str(raw))[:200])

    async def _response(self, frame: list[Any], raw: Any) -> None:
        ok = len(frame) == 3 and isinstance(frame[1], str) and isinstance(frame[2], dict) if frame[0] == 3 \
            else len(frame) in (4, 5) and all(isinstance(x, str) for x in frame[1:4])
        if not ok:
            return self._drop(raw, "malformed CALLRESULT/CALLERROR")
        if frame[0] == 3:
            self._response_queue.put_nowait(CallResult(frame[1], frame[2]))
        else:
            details = frame[4] if len(frame) == 5 and isinstance(frame[4], dict) else {}
            self._response_queue.put_nowait(CallError(frame[1], frame[2], frame[3], details))

    async def _error(self, unique_id: str, rejected: CallRejected) -> None:
        log.warning("ocpp.call_error_sent", code=rejected.code, description=rejected.description)
        await self._send(json.dumps([4, unique_id, rejected.code, rejected.description, {}],
                                    separators=(",", ":")))

    async def _call(self, unique_id: str, action: str, payload: dict[str, Any]) -> None:
        if action not in ACTIONS:
            return await self._error(unique_id, CallRejected("NotImplemented", f"unknown action {action[:40]}"))
        handlers = self.route_map.get(action)
        if handlers is None or "_on_action" not in handlers:
            return await self._error(unique_id, CallRejected("NotSupported", f"{action} is not supported"))
        problem = schema_error(action, payload)
        if problem:
            return await self._error(unique_id, problem)
        kwargs = camel_to_snake_case(payload)
        try:
            result = handlers["_on_action"](**kwargs)
            if inspect.isawaitable(result):
                result = await result
        except CallRejected as rejected:
            return await self._error(unique_id, rejected)
        except OCPPError as exc:
            return await self._error(unique_id, CallRejected(SPELLING.get(exc.code, exc.code), exc.description))
        except Exception:
            log.exception("ocpp.handler_failed", action=action)
            return await self._error(unique_id, CallRejected("InternalError", f"{action} failed"))
        body = snake_to_camel_case(remove_nones(serialize_as_dict(result)))
        problem = schema_error(action, body, response=True)
        if problem:  # our own bug: say so, do not send an invalid reply
            log.error("ocpp.invalid_reply", action=action, problem=problem.description)
            return await self._error(unique_id, CallRejected("InternalError", "invalid reply"))
        await self._send(json.dumps([3, unique_id, body], separators=(",", ":"), default=str))
        after = handlers.get("_after_action")
        if after is not None:  # follow-ups (e.g. a triggered message) run beside the receive loop
            task = asyncio.ensure_future(_maybe_await(after, kwargs))
            self._after.add(task)
            task.add_done_callback(self._after.discard)


async def _maybe_await(func: Callable[..., Any], kwargs: dict[str, Any]) -> None:
    try:
        result = func(**kwargs)
        if inspect.isawaitable(result):
            await result
    except Exception:
        log.exception("ocpp.after_failed")
