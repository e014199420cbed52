"""HTTP/1.1 for the web page: asyncio streams framed by h11 (python-hyper's state machine), with
bounded requests, keep-alive, streamed responses and caps on open connections (in all and per
address) that slow or idle peers cannot fill: the oldest one still waiting for its request goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, AsyncIterator, Awaitable, Callable
from urllib.parse import parse_qsl, unquote, urlsplit

import h11
import structlog

log = structlog.get_logger("evsed.web")

MAX_HEAD_BYTES = 8 * 1024  # request line and headers together; beyond, 431
MAX_BODY_BYTES = 16 * 1024  # beyond, 413
MAX_QUERY_FIELDS = 32
# Beyond either cap, the oldest connection still waiting for a request (new and slow, or kept
# alive and idle) is closed for the new one; when none waits, the new one gets 503. The live
# streams have a lower cap of their own (evsed.web.live).
MAX_CONNECTIONS = 64
MAX_PER_ADDRESS = 16  # a browser keeps about 6 to a host, plus a page's live stream
IDLE_TIMEOUT_S = 30.0  # a kept-alive connection that sends nothing for this long is closed
# From a request's first byte to its last, and for a new connection from its accept: a peer that
# connects and sends nothing, or a byte now and then, is gone within this (408 once it sent some).
REQUEST_TIMEOUT_S = 10.0
WRITE_TIMEOUT_S = 30.0  # a peer that takes nothing for this long is dropped
READ_SIZE = 8 * 1024
LINGER_S, LINGER_BYTES = 2.0, 64 * 1024  # after an error answer, what the peer still sends is dropped
BUSY = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


class HTTPError(Exception):
    """Answer with this status and a short plain-text message."""

    def __init__(self, status: int, text: str = "", headers: dict[str, str] | None = None):
        super().__init__(text)
        self.status, self.headers = status, headers or {}
        self.text = text or f"{status}: {HTTPStatus(status).phrase}"


@dataclass
class Request:
    method: str
    path: str  # percent-decoded
    query: dict[str, str]  # the first value of each name
    headers: dict[str, str]  # names in lower case; a repeated field's values joined
    body: bytes
    remote: str | None
    match: dict[str, str] = field(default_factory=dict)  # the route's {name} part
    scheme: str = "http"
    secure: bool = False  # no TLS in this process

    @property
    def host(self) -> str:
        return self.headers.get("host", "")

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").partition(";")[0].strip().lower()

    @property
    def cookies(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for part in self.headers.get("cookie", "").split(";"):
            name, eq, value = part.strip().partition("=")
            if eq and name not in out:
                out[name] = value.strip().strip('"')
        return out

    def json(self) -> Any:
        """The body as JSON; ValueError when it is not."""
        return json.loads(self.body)


class Response:
    """A status, headers and a body: bytes, or an async iterator of bytes sent as they come
    (chunked). on_close runs once the response is over, sent in full or not."""

    def __init__(self, body: bytes | str | AsyncIterator[bytes] = b"", *, status: int = 200,
                 content_type: str = "text/plain; charset=utf-8", headers: dict[str, str] | None = None,
                 on_close: Callable[[], None] | None = None):
        self.body = body.encode() if isinstance(body, str) else body
        self.status, self.on_close = status, on_close
        self.headers = {"Content-Type": content_type, **(headers or {})}
        self.cookies: list[str] = []

    def set_cookie(self, name: str, value: str, *, max_age: int, path: str, httponly: bool, samesite: str,
                   secure: bool) -> None:
        self.cookies.append("; ".join([f"{name}={value}", f"Max-Age={max_age}", f"Path={path}",
                                       f"SameSite={samesite}"] + ["HttpOnly"] * httponly + ["Secure"] * secure))

    def del_cookie(self, name: str, *, path: str) -> None:
        self.cookies.append(f'{name}=""; expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0; Path={path}')


def json_response(data: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(data), status=status, content_type="application/json; charset=utf-8",
                    headers=headers)


Handler = Callable[[Request], Awaitable[Response]]


class Router:
    """Paths, exact or with one {name} part that holds no '/' (`/static/{name}`), to a handler
    per method; GET routes answer HEAD too. resolve() raises 404 or 405 (with Allow)."""

    def __init__(self) -> None:
        self._routes: dict[tuple[str, str, str], dict[str, Handler]] = {}

    def add(self, method: str, pattern: str, handler: Handler) -> None:
        prefix, _, rest = pattern.partition("{")
        name, _, suffix = rest.partition("}")
        methods = self._routes.setdefault((prefix, name, suffix), {})
        methods[method] = handler
        if method == "GET":
            methods["HEAD"] = handler

    def resolve(self, method: str, path: str) -> tuple[Handler, dict[str, str]]:
        for (prefix, name, suffix), methods in self._routes.items():
            if not name and path != prefix:
                continue
            value = path[len(prefix):len(path) - len(suffix)]
            if name and not (path.startswith(prefix) and path.endswith(suffix) and value and "/" not in value):
                continue
            if method not in methods:
                raise HTTPError(405, headers={"Allow": ",".join(sorted(methods))})
            return methods[method], {name: value} if name else {}
        raise HTTPError(404)


@dataclass
class _Open:
    """An open connection: its peer's address, and since when it waits for a request (None:
    one is being answered)."""

    writer: asyncio.StreamWriter
    address: str | None
    waiting_since: float | None


class Server:
    """Serves handle(request) on one address; every response also carries `headers`."""

    def __init__(self, handle: Handler, headers: dict[str, str]):
        self.handle, self.headers = handle, headers
        self._server: asyncio.Server | None = None
        self._open: dict[asyncio.Task, _Open] = {}
        self.evicted = 0  # connections closed for a newer one (counted for the logs and tests)

    async def start(self, host: str, port: int) -> tuple[str, int]:
        """Listen; the address actually bound (port 0 picks a free one)."""
        self._server = await asyncio.start_server(self._connection, host, port)
        bound = self._server.sockets[0].getsockname()
        return bound[0], bound[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task, conn in list(self._open.items()):  # both: a cancel alone can be lost (wait_for in 3.11)
            conn.writer.transport.abort()
            task.cancel()
        await asyncio.gather(*self._open, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        peer = writer.get_extra_info("peername")
        conn = _Open(writer, peer[0] if peer else None, asyncio.get_running_loop().time())
        try:
            if not self._room_for(conn.address):
                writer.write(BUSY)
                await _linger(reader, writer)
                return
            self._open[task] = conn
            await self._serve(h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES),
                              reader, writer, conn)
        except (OSError, h11.ProtocolError):  # OSError includes TimeoutError
            pass  # the peer went away, stalled, or broke the protocol mid-response: drop it
        except asyncio.CancelledError:
            pass  # close(): ending quietly, as asyncio 3.11 logs a cancelled connection task as an error
        finally:
            self._open.pop(task, None)
            writer.close()

    def _room_for(self, address: str | None) -> bool:
        """Whether a new connection from address may be served: under both caps, or after the
        oldest connection still waiting for a request (from that address, at its cap) is closed."""
        for one_address, cap in ((True, MAX_PER_ADDRESS), (False, MAX_CONNECTIONS)):
            crowd = [c for c in self._open.values() if not one_address or c.address == address]
            if len(crowd) < cap:
                continue
            waiting = [c for c in crowd if c.waiting_since is not None]
            if not waiting:
                return False
            oldest = min(waiting, key=lambda c: c.waiting_since or 0.0)
            oldest.writer.transport.abort()  # its task ends at its next read
            self._open = {t: c for t, c in self._open.items() if c is not oldest}
            self.evicted += 1
            if self.evicted == 1 or self.evicted % 100 == 0:
                log.warning("web.connection_evicted", address=oldest.address, open=len(self._open), evicted=self.evicted)
        return True

    async def _serve(self, conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     peer: _Open) -> None:
        loop = asyncio.get_running_loop()
        deadline: float | None = loop.time() + REQUEST_TIMEOUT_S  # a new connection's first request
        while True:
            try:
                request = await _read_request(conn, reader, writer, peer.address, deadline)
            except HTTPError as exc:  # malformed, too large or too slow: answer if we still can
                if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                    peer.waiting_since = None
                    await self._send(conn, writer, _error(exc), head_only=False)
                    await _linger(reader, writer)
                return
            if request is None:
                return
            peer.waiting_since = None
            await self._send(conn, writer, await self._respond(request), head_only=request.method == "HEAD")
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()
            peer.waiting_since, deadline = loop.time(), None

    async def _respond(self, request: Request) -> Response:
        try:
            return await self.handle(request)
        except HTTPError as exc:
            return _error(exc)
        except Exception:  # noqa: BLE001 - one broken page must not end the service
            log.exception("web.request_failed", method=request.method, path=request.path)
            return _error(HTTPError(500))

    async def _send(self, conn: h11.Connection, writer: asyncio.StreamWriter, response: Response,
                    head_only: bool) -> None:
        body = response.body
        headers = [*{**response.headers, **self.headers}.items(), *(("Set-Cookie", c) for c in response.cookies),
                   ("Date", http_date())]
        if isinstance(body, bytes):
            headers.append(("Content-Length", str(len(body))))
        try:
            await _write(writer, conn.send(h11.Response(status_code=response.status, headers=headers,
                                                        reason=HTTPStatus(response.status).phrase)))
            if head_only:
                pass
            elif isinstance(body, bytes):
                if body:
                    await _write(writer, conn.send(h11.Data(data=body)))
            else:
                async for chunk in body:
                    if chunk:
                        await _write(writer, conn.send(h11.Data(data=chunk)))
            await _write(writer, conn.send(h11.EndOfMessage()))
        finally:
            aclose = getattr(body, "aclose", None)
            if aclose is not None:
                await aclose()  # an async generator's own clean-up runs now, not at garbage collection
            if response.on_close is not None:
                response.on_close()


async def _read_request(conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                        remote: str | None, deadline: float | None) -> Request | None:
    """The next request, its body read in full, by `deadline` (loop time) if given; None when the
    peer closed or stayed idle."""
    loop = asyncio.get_running_loop()
    # else the request's clock starts at its first byte (or now, with part of it already buffered)
    started = bool(conn.trailing_data[0])
    if deadline is None and started:
        deadline = loop.time() + REQUEST_TIMEOUT_S
    head: h11.Request | None = None
    body = bytearray()
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            raise HTTPError(exc.error_status_hint, f"{exc.error_status_hint}: {exc}") from None
        if event is h11.NEED_DATA:
            if conn.they_are_waiting_for_100_continue:
                await _write(writer, conn.send(h11.InformationalResponse(status_code=100, headers=[])))
            try:
                async with asyncio.timeout(IDLE_TIMEOUT_S if deadline is None else deadline - loop.time()):
                    data = await reader.read(READ_SIZE)
            except TimeoutError:
                if not started:
                    return None  # nothing sent: closed without an answer
                raise HTTPError(408) from None
            started = True
            deadline = deadline or loop.time() + REQUEST_TIMEOUT_S
            conn.receive_data(data)  # b"" is the peer's end
        elif isinstance(event, h11.Request):  # h11 bounds only a head still incomplete; this, any head
            head = event
            if len(event.target) + sum(len(n) + len(v) + 4 for n, v in event.headers.raw_items()) > MAX_HEAD_BYTES:
                raise HTTPError(431)
            length = dict(event.headers).get(b"content-length", b"0")
            if int(length) > MAX_BODY_BYTES:  # h11 has checked it is digits
                raise HTTPError(413)
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > MAX_BODY_BYTES:
                raise HTTPError(413)
        elif isinstance(event, h11.EndOfMessage):
            assert head is not None
            return _request(head, bytes(body), remote)
        else:  # ConnectionClosed, or PAUSED (never: a cycle ends before the next read)
            return None


def _request(head: h11.Request, body: bytes, remote: str | None) -> Request:
    target = urlsplit(head.target.decode("ascii"))  # h11 allows only visible ASCII in a target
    if not target.path.startswith("/"):
        raise HTTPError(400, "400: expected a path")
    try:
        query = dict(reversed(parse_qsl(target.query, keep_blank_values=True, max_num_fields=MAX_QUERY_FIELDS)))
    except ValueError:
        raise HTTPError(400, "400: too many query fields") from None
    headers: dict[str, str] = {}
    for raw_name, raw_value in head.headers:
        name, value = raw_name.decode("ascii"), raw_value.decode("latin-1")
        headers[name] = f"{headers[name]}{'; ' if name == 'cookie' else ', '}{value}" if name in headers else value
    return Request(head.method.decode("ascii"), unquote(target.path), query, headers, body, remote)


async def _linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Read and drop what the peer still sends (a refused body), for a while: closing with unread
    data would reset the connection, and the peer might lose the answer."""
    with contextlib.suppress(OSError):  # TimeoutError included
        if writer.can_write_eof():
            writer.write_eof()
        async with asyncio.timeout(LINGER_S):
            for _ in range(LINGER_BYTES // READ_SIZE):
                if not await reader.read(READ_SIZE):
                    break


def _error(exc: HTTPError) -> Response:
    return Response(exc.text, status=exc.status, headers=exc.headers)


async def _write(writer: asyncio.StreamWriter, data: bytes | None) -> None:
    if data:
        writer.write(data)
        async with asyncio.timeout(WRITE_TIMEOUT_S):
            await writer.drain()


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def http_date(now: float | None = None) -> str:
    """RFC 9110's IMF-fixdate, whatever the locale."""
    t = time.gmtime(now)
    return (f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year} "
            f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT")
