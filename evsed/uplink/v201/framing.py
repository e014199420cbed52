"""Strict OCPP-J 2.0.1 framing on the ocpp package's v201 ChargePoint: every frame from the CSMS is
checked before a handler sees it and answered with the CALLERROR OCPP-J 2.0.1 names (part 4 4.3),
never a crash; replies are checked against the official schemas before they leave."""

from __future__ import annotations

import asyncio
import inspect
import json
import re
from typing import Any, Callable

import structlog
from ocpp import routing
from ocpp.charge_point import remove_nones
from ocpp.exceptions import OCPPError
from ocpp.messages import CallError, CallResult, MessageType, get_validator
from ocpp.v201 import ChargePoint
from ocpp.v201.enums import Action

log = structlog.get_logger("evsed.uplink")

ACTIONS = frozenset(a.value for a in Action)
# jsonschema keyword -> OCPP-J 2.0.1 error code
BY_KEYWORD = {"type": "TypeConstraintViolation", "required": "OccurrenceConstraintViolation",
              "additionalProperties": "FormatViolation", "minItems": "OccurrenceConstraintViolation",
              "maxItems": "OccurrenceConstraintViolation"}
NO_ID = "-1"  # the messageId of a CALLERROR for a frame whose own id could not be read


Handler = Callable[..., Any]


def on(action: str) -> Callable[[Handler], Handler]:
    """ocpp.routing.on, typed: the handler answers a CALL of action."""
    decorate: Callable[[Handler], Handler] = routing.on(action)
    return decorate


def after(action: str) -> Callable[[Handler], Handler]:
    """ocpp.routing.after, typed: runs once the answer to a CALL of action is sent."""
    decorate: Callable[[Handler], Handler] = routing.after(action)
    return decorate


def redact(frame: str) -> str:
    """A frame fit for a log: a BasicAuthPassword's value replaced."""
    if "BasicAuthPassword" not in frame:
        return frame
    return re.sub(r'("attributeValue"\s*:\s*)"(?:[^"\\]|\\.)*"', r'\1"***"', frame)


class CallRejected(Exception):
    """An inbound CALL answered with a CALLERROR (code, description)."""

    def __init__(self, code: str, description: str):
        super().__init__(f"{code}: {description}")
        self.code, self.description = code, description


def schema_error(action: str, payload: Any, *, response: bool = False) -> CallRejected | None:
    """None when payload fits the official 2.0.1 schema of action, else the CALLERROR it earns."""
    kind = MessageType.CallResult if response else MessageType.Call
    validator = get_validator(kind, action, "2.0.1")
    errors = sorted(validator.iter_errors(payload), key=lambda e: (len(e.path), str(e.path)))
    if not errors:
        return None
    e = errors[0]
    code = BY_KEYWORD.get(str(e.validator), "PropertyConstraintViolation")
    where = "/".join(str(p) for p in e.path) or "payload"
    return CallRejected(code, f"{where}: {e.message}"[:200])


class StrictChargePoint(ChargePoint):  # type: ignore[misc, unused-ignore]  # the ocpp package is untyped
    """The package's v201 ChargePoint with its inbound routing made strict and crash-proof; outbound
    calls (call()) are the package's, validated against the official schemas. Handlers (@on, @after)
    take the payload as it came, one camelCase dict, and return the reply's camelCase dict.
    on_garbage(why) hears of each frame that was not OCPP-J (a security event)."""

    def __init__(self, id: str, connection: Any, response_timeout: float = 30,
                 on_garbage: Callable[[str], None] | None = None):
        super().__init__(id, connection, response_timeout)
        self.malformed = 0            # frames that were not OCPP-J at all
        self.on_garbage = on_garbage or (lambda why: None)
        self._after: set[asyncio.Task[None]] = set()

    async def route_message(self, raw_msg: Any) -> None:
        try:
            frame = json.loads(raw_msg)
        except (ValueError, TypeError):
            frame = None
        if not isinstance(frame, list) or len(frame) < 3 or type(frame[0]) is not int:
            return await self._garbage(raw_msg, "RpcFrameworkError", "not an OCPP-J frame")
        unique_id = frame[1] if isinstance(frame[1], str) and 0 < len(frame[1]) <= 36 else None
        kind = frame[0]
        if kind in (MessageType.CallResult, MessageType.CallError):
            return await self._response(frame, raw_msg)
        if kind != MessageType.Call:
            return await self._garbage(raw_msg, "MessageTypeNotSupported", f"message type {kind}", unique_id)
        if unique_id is None:
            return await self._garbage(raw_msg, "RpcFrameworkError", "the messageId could not be read")
        if len(frame) != 4 or not isinstance(frame[2], str) or not isinstance(frame[3], dict):
            return await self._error(unique_id, CallRejected(
                "RpcFrameworkError", "a CALL is [2, messageId, action, {payload}]"))
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

    async def _garbage(self, raw: Any, code: str, why: str, unique_id: str | None = None) -> None:
        self.malformed += 1
        log.warning("ocpp.frame_refused", why=why, frame=redact(str(raw))[:200])
        self.on_garbage(why)
        await self._error(unique_id or NO_ID, CallRejected(code, why))

    async def _response(self, frame: list[Any], raw: Any) -> None:
        ok = len(frame) == 3 and isinstance(frame[1], str) and isinstance(frame[2], dict) if frame[0] == 3 \
            else len(frame) in (4, 5) and all(isinstance(x, str) for x in frame[1:4])
        if not ok:
            self.malformed += 1
            log.warning("ocpp.frame_dropped", why="malformed CALLRESULT/CALLERROR", frame=redact(str(raw))[:200])
            return
        if frame[0] == 3:
            self._response_queue.put_nowait(CallResult(frame[1], frame[2]))
        else:
            details = frame[4] if len(frame) == 5 and isinstance(frame[4], dict) else {}
            self._response_queue.put_nowait(CallError(frame[1], frame[2], frame[3], details))

    async def _error(self, unique_id: str, rejected: CallRejected) -> None:
        log.warning("ocpp.call_error_sent", code=rejected.code, description=rejected.description)
        await self._send(json.dumps([4, unique_id, rejected.code, rejected.description, {}],
                                    separators=(",", ":")))

    def refused(self, action: str, payload: dict[str, Any]) -> CallRejected | None:
        """A CALL the station answers with this CALLERROR whatever it holds (None: routed)."""
        return None

    async def _call(self, unique_id: str, action: str, payload: dict[str, Any]) -> None:
        if action not in ACTIONS:
            return await self._error(unique_id, CallRejected("NotImplemented", f"unknown action {action[:40]}"))
        if (refused := self.refused(action, payload)) is not None:
            return await self._error(unique_id, refused)
        handlers = self.route_map.get(action)
        if handlers is None or "_on_action" not in handlers:
            return await self._error(unique_id, CallRejected("NotSupported", f"{action} is not supported"))
        problem = schema_error(action, payload)
        if problem:
            return await self._error(unique_id, problem)
        try:
            result = handlers["_on_action"](payload)
            if inspect.isawaitable(result):
                result = await result
        except CallRejected as rejected:
            return await self._error(unique_id, rejected)
        except OCPPError as exc:
            return await self._error(unique_id, CallRejected(exc.code, exc.description))
        except Exception:
            log.exception("ocpp.handler_failed", action=action)
            return await self._error(unique_id, CallRejected("InternalError", f"{action} failed"))
        body = remove_nones(result)
        problem = schema_error(action, body, response=True)
        if problem:  # our own bug: say so, do not send an invalid reply
            log.error("ocpp.invalid_reply", action=action, problem=problem.description)
            return await self._error(unique_id, CallRejected("InternalError", "invalid reply"))
        await self._send(json.dumps([3, unique_id, body], separators=(",", ":"), default=str))
        after = handlers.get("_after_action")
        if after is not None:  # follow-ups (e.g. a triggered message) run beside the receive loop
            task = asyncio.ensure_future(_maybe_await(after, payload))
            self._after.add(task)
            task.add_done_callback(self._after.discard)


async def _maybe_await(func: Callable[..., Any], payload: dict[str, Any]) -> None:
    try:
        result = func(payload)
        if inspect.isawaitable(result):
            await result
    except Exception:
        log.exception("ocpp.after_failed")
