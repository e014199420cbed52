"""The web page service: an HTTP server beside the daemon, talking to it only through the Link
(the control socket). Read-only for everyone; actions need a login, a cookie and a CSRF token.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from pathlib import Path
from typing import Any, AsyncIterator, Callable
from zoneinfo import ZoneInfo

import structlog

from evsed.config import Config
from evsed.errors import StartError
from evsed.web import auth, charts, memory, records, settings as web_settings
from evsed.web.commands import CommandError, to_request
from evsed.web.httpd import HTTPError, Request, Response, Router, Server, json_response
from evsed.web.live import Live
from evsed.web.view import page_view

log = structlog.get_logger("evsed.web")

STATIC_DIR = Path(__file__).with_name("static")  # package data, installed as plain files (importlib.resources: +1.5 MB)
STATIC = {"app.js": "text/javascript", "app.css": "text/css", "index.html": "text/html",
          "icon.svg": "image/svg+xml"}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
                               "script-src 'self'; connect-src 'self'; frame-ancestors 'none'; "
                               "base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY",
}
FAILED_LOGIN_DELAY_S = 1.0  # every wrong password answers this much later, on top of the back-off
MAX_ROWS = 500
READS_RECORDS = ("/api/sessions", "/sessions.csv", "/api/report", "/usage/")


class WebService:
    """The app, its Live picture and its login state; start() binds, stop() closes."""

    def __init__(self, config: Config, link, settings: web_settings.WebSettings, *,
                 clock: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic):
        self.config, self.link, self.settings = config, link, settings
        self.tz = ZoneInfo(config.charger.timezone)
        self.clock, self.monotonic = clock, monotonic
        self.live = Live(link, config.store.state_dir / "sessions.db", self.tz, clock=clock)
        self.sessions = auth.Sessions(web_settings.load_secret(settings), settings.session_hours * 3600)
        self.backoff = auth.Backoff()
        self._verify_lock = asyncio.Lock()  # one slow hash at a time: memory and CPU stay bounded
        self._server: Server | None = None
        self.url = ""
        self.router = Router()
        for path, handler in (("/", self.index), ("/static/{name}", self.static), ("/api/view", self.view),
                              ("/events", self.events), ("/api/sessions", self.sessions_json),
                              ("/sessions.csv", self.sessions_csv), ("/api/report", self.report),
                              ("/usage/{chart}.svg", self.usage_svg)):
            self.router.add("GET", path, handler)
        for path, handler in (("/login", self.login), ("/logout", self.logout), ("/api/command", self.command)):
            self.router.add("POST", path, handler)

    # --- lifecycle --------------------------------------------------------------------
    async def start(self, port: int | None = None) -> None:
        memory.configure()
        self._server = Server(self.handle, SECURITY_HEADERS)
        host, bound = await self._server.start(self.settings.bind, self.settings.port if port is None else port)
        self.url = f"http://{f'[{host}]' if ':' in host else host}:{bound}/"
        log.info("web.listening", url=self.url, login=bool(self.settings.password_hash))

    async def stop(self) -> None:
        if self._server is not None:
            self.live.publish("close")  # the open pages' streams end first
            await self._server.close()
            self._server = None

    async def handle(self, request: Request) -> Response:
        """Every request: the same-origin and JSON checks on POSTs, the route, no caching of answers
        that depend on the login (the server adds SECURITY_HEADERS to all)."""
        if request.method == "POST":
            origin = request.headers.get("origin")
            if origin is not None and origin != f"{request.scheme}://{request.host}":
                return json_response({"ok": False, "error": "cross-site request"}, status=403)
            if request.content_type != "application/json":
                return json_response({"ok": False, "error": "expected JSON"}, status=415)
        handler, request.match = self.router.resolve(request.method, request.path)
        response = await handler(request)
        if request.path.startswith(("/api/", "/login", "/logout")):
            response.headers["Cache-Control"] = "no-store"
        if request.path.startswith(READS_RECORDS):  # its rows are garbage now; the answer is small or mmap'd
            memory.trim()
        return response

    def _nonce(self, request: Request) -> str | None:
        return self.sessions.nonce(request.cookies.get(auth.COOKIE), self.clock())

    def _me(self, request: Request) -> dict:
        nonce = self._nonce(request)
        return {"logged_in": nonce is not None, "csrf": self.sessions.csrf(nonce) if nonce else None,
                "login_possible": bool(self.settings.password_hash)}

    def _page(self, logged_in: bool) -> dict:
        now = dt.datetime.fromtimestamp(self.clock(), self.tz)
        view = page_view(self.link.hello, self.live.status, self.live.totals(), now, self.tz,
                         show_tags=logged_in, online=self.live.online, title=self.settings.title)
        view["records_version"] = self.live.records_version
        return view

    # --- read-only pages ----------------------------------------------------------------
    async def index(self, request: Request) -> Response:
        return await self.static(request, "index.html")

    async def static(self, request: Request, name: str | None = None) -> Response:
        name = name or request.match["name"]
        if name not in STATIC:
            raise HTTPError(404)
        body = (STATIC_DIR / name).read_bytes()
        return Response(body, content_type=f"{STATIC[name]}; charset=utf-8", headers={"Cache-Control": "no-cache"})

    async def view(self, request: Request) -> Response:
        me = self._me(request)
        return json_response({"me": me, "view": self._page(me["logged_in"]), "samples": self.live.samples})

    async def events(self, request: Request) -> Response:
        logged_in = self._nonce(request) is not None
        queue = self.live.subscribe()
        if queue is None:
            raise HTTPError(503, "too many open pages")
        return Response(self._events(queue, logged_in), content_type="text/event-stream",
                        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
                        on_close=lambda: self.live.unsubscribe(queue))

    async def _events(self, queue: asyncio.Queue, logged_in: bool) -> AsyncIterator[bytes]:
        yield _event("full", {"view": self._page(logged_in), "samples": self.live.samples})
        while True:
            try:
                async with asyncio.timeout(20):
                    kind, data = await queue.get()
            except TimeoutError:
                yield b": keep-alive\n\n"
                continue
            if kind == "close":
                return
            yield _event(kind, self._page(logged_in) if kind == "view" else data)

    def _filters(self, request: Request) -> dict:
        q = request.query
        out: dict[str, Any] = {"card": q.get("card", "").strip()[:64] or None}
        try:
            if q.get("since"):
                out["since"] = records.iso_utc(records.local_day_start(
                    dt.datetime.fromisoformat(q["since"]).replace(tzinfo=self.tz), self.tz))
            if q.get("until"):  # the whole day named
                day = dt.datetime.fromisoformat(q["until"]).replace(tzinfo=self.tz) + dt.timedelta(days=1)
                out["until"] = records.iso_utc(records.local_day_start(day, self.tz))
        except ValueError:
            raise HTTPError(400, "since/until: expected dates as YYYY-MM-DD") from None
        return out

    async def sessions_json(self, request: Request) -> Response:
        show = self._nonce(request) is not None
        rows = await asyncio.to_thread(records.newest_json, self.live.db_path, self.tz, show_tags=show,
                                       limit=MAX_ROWS, **self._filters(request))
        return Response(f'{{"sessions": {rows}, "limit": {MAX_ROWS}}}', content_type="application/json; charset=utf-8")

    async def sessions_csv(self, request: Request) -> Response:
        show = self._nonce(request) is not None
        csv = await asyncio.to_thread(records.csv_bytes, self.live.db_path, show_tags=show, **self._filters(request))
        return Response(csv, content_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": 'attachment; filename="evsed-sessions.csv"'})

    def _month(self, request: Request) -> tuple[str, str, str]:
        month = request.query.get("month") or dt.datetime.fromtimestamp(self.clock(), self.tz).strftime("%Y-%m")
        try:
            start, end = records.month_bounds(month, self.tz)
        except ValueError:
            raise HTTPError(400, "month: expected YYYY-MM") from None
        return month, records.iso_utc(start), records.iso_utc(end)

    async def report(self, request: Request) -> Response:
        month, since, until = self._month(request)
        rows = await asyncio.to_thread(records.read_sessions, self.live.db_path, since=since, until=until)
        return json_response({"month": month, "report": records.report(rows, self.tz),
                              "usage": records.usage(rows, month, self.tz)})

    async def usage_svg(self, request: Request) -> Response:
        month, since, until = self._month(request)
        rows = await asyncio.to_thread(records.read_sessions, self.live.db_path, since=since, until=until)
        usage = records.usage(rows, month, self.tz)
        chart = request.match["chart"]
        if chart == "day":
            svg = charts.energy_by_day(usage["energy_wh_by_day"], month)
        elif chart == "hour":
            svg = charts.sessions_by_hour(usage["sessions_by_hour"], month)
        else:
            raise HTTPError(404)
        return Response(svg, content_type="image/svg+xml; charset=utf-8", headers={"Cache-Control": "no-cache"})

    # --- login and actions ------------------------------------------------------------
    async def login(self, request: Request) -> Response:
        address = request.remote or "?"
        wait = self.backoff.wait_s(address, self.monotonic())
        if wait > 0:
            return json_response({"ok": False, "error": f"too many wrong passwords; try again in {wait:.0f} s"},
                                 status=429, headers={"Retry-After": str(max(1, round(wait)))})
        try:
            password = request.json().get("password")
        except (ValueError, AttributeError):
            password = None
        if not isinstance(password, str) or len(password) > 1024:
            return json_response({"ok": False, "error": "expected {\"password\": \"...\"}"}, status=400)
        async with self._verify_lock:
            good = await asyncio.to_thread(web_settings.verify_password, password, self.settings.password_hash)
        if not good:
            delay = self.backoff.failed(address, self.monotonic())
            log.warning("web.login_failed", address=address, next_try_in_s=delay)
            await asyncio.sleep(FAILED_LOGIN_DELAY_S)
            return json_response({"ok": False, "error": "wrong password"}, status=403)
        self.backoff.succeeded(address)
        cookie = self.sessions.issue(self.clock())
        nonce = self.sessions.nonce(cookie, self.clock())
        log.info("web.login", address=address)
        response = json_response({"ok": True, "csrf": self.sessions.csrf(nonce)})  # type: ignore[arg-type]
        response.set_cookie(auth.COOKIE, cookie, max_age=int(self.settings.session_hours * 3600), path="/",
                            httponly=True, samesite="Strict", secure=request.secure)
        return response

    async def logout(self, request: Request) -> Response:
        self.sessions.revoke(request.cookies.get(auth.COOKIE), self.clock())
        response = json_response({"ok": True})
        response.del_cookie(auth.COOKIE, path="/")
        return response

    async def command(self, request: Request) -> Response:
        nonce = self._nonce(request)
        if nonce is None:
            return json_response({"ok": False, "error": "log in first"}, status=401)
        if not self.sessions.csrf_ok(nonce, request.headers.get("x-csrf-token")):
            return json_response({"ok": False, "error": "missing or stale CSRF token; reload the page"},
                                     status=403)
        try:
            body = request.json()
            req = to_request(body, self.link.hello, dt.datetime.fromtimestamp(self.clock(), dt.timezone.utc))
        except (ValueError, CommandError) as exc:
            return json_response({"ok": False, "error": str(exc)}, status=400)
        log.info("web.command", address=request.remote, **req.to_wire())
        try:
            reply = await self.link.command(req)
        except Exception as exc:  # noqa: BLE001 - the daemon's absence is an answer to show
            log.warning("web.command_failed", error=repr(exc), cmd=req.LABEL)
            return json_response({"ok": False, "error": f"the charger did not answer: {exc}"}, status=502)
        self.live.changed()
        return json_response(reply.to_wire())


def _event(kind: str, data: Any) -> bytes:
    payload = json.dumps(data, separators=(",", ":"), default=str)
    return f"event: {kind}\ndata: {payload}\n\n".encode()


async def serve(config: Config, link) -> None:
    """Run the web page for config's [web] section until cancelled."""
    settings = web_settings.parse(config)
    if settings is None:
        raise StartError(f"{config.path}: no [web] section: the web page is off")
    service = WebService(config, link, settings)
    await service.start()
    try:
        await service.live.run()
    finally:
        await service.stop()
