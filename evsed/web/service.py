"""The web page service: an aiohttp server beside the daemon, talking to it only through the Link
(the control socket). Read-only for everyone; actions need a login, a cookie and a CSRF token.
"""

from __future__ import annotations

import asyncio
import ctypes
import datetime as dt
import json
import time
from importlib import resources
from typing import Any, Callable
from zoneinfo import ZoneInfo

import structlog
from aiohttp import web

from evsed.config import Config
from evsed.errors import StartError
from evsed.web import auth, charts, records, settings as web_settings
from evsed.web.commands import CommandError, to_request
from evsed.web.live import Live
from evsed.web.view import page_view

log = structlog.get_logger("evsed.web")

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
        self._streams: set[web.StreamResponse] = set()
        self._runner: web.AppRunner | None = None
        self.url = ""

    # --- lifecycle --------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._headers], client_max_size=16 * 1024)
        r = app.router
        r.add_get("/", self.index)
        r.add_get("/static/{name}", self.static)
        r.add_get("/api/view", self.view)
        r.add_get("/events", self.events)
        r.add_get("/api/sessions", self.sessions_json)
        r.add_get("/sessions.csv", self.sessions_csv)
        r.add_get("/api/report", self.report)
        r.add_get("/usage/{chart}.svg", self.usage_svg)
        r.add_post("/login", self.login)
        r.add_post("/logout", self.logout)
        r.add_post("/api/command", self.command)
        app.on_shutdown.append(self._close_streams)
        return app

    async def start(self, port: int | None = None) -> None:
        _large_allocations_return_to_the_system()
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.settings.bind, self.settings.port if port is None else port)
        await site.start()
        host, bound = self._runner.addresses[0][:2]
        self.url = f"http://{f'[{host}]' if ':' in host else host}:{bound}/"
        log.info("web.listening", url=self.url, login=bool(self.settings.password_hash))

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _close_streams(self, app: web.Application) -> None:
        self.live.publish("close")

    # --- helpers ----------------------------------------------------------------------
    @web.middleware
    async def _headers(self, request: web.Request, handler):
        if request.method == "POST":
            origin = request.headers.get("Origin")
            if origin is not None and origin != f"{request.scheme}://{request.host}":
                return web.json_response({"ok": False, "error": "cross-site request"}, status=403)
            if request.content_type != "application/json":
                return web.json_response({"ok": False, "error": "expected JSON"}, status=415)
        response = await handler(request)
        response.headers.update(SECURITY_HEADERS)
        if request.path.startswith(("/api/", "/login", "/logout")):
            response.headers["Cache-Control"] = "no-store"
        return response

    def _nonce(self, request: web.Request) -> str | None:
        return self.sessions.nonce(request.cookies.get(auth.COOKIE), self.clock())

    def _me(self, request: web.Request) -> dict:
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
    async def index(self, request: web.Request) -> web.Response:
        return await self.static(request, "index.html")

    async def static(self, request: web.Request, name: str | None = None) -> web.Response:
        name = name or request.match_info["name"]
        if name not in STATIC:
            raise web.HTTPNotFound()
        body = resources.files("evsed.web").joinpath("static", name).read_bytes()
        return web.Response(body=body, content_type=STATIC[name], charset="utf-8",
                            headers={"Cache-Control": "no-cache"})

    async def view(self, request: web.Request) -> web.Response:
        me = self._me(request)
        return web.json_response({"me": me, "view": self._page(me["logged_in"]), "samples": self.live.samples})

    async def events(self, request: web.Request) -> web.StreamResponse:
        logged_in = self._nonce(request) is not None
        queue = self.live.subscribe()
        if queue is None:
            raise web.HTTPServiceUnavailable(text="too many open pages")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                               "X-Accel-Buffering": "no", **SECURITY_HEADERS})
        try:
            await response.prepare(request)
            await _send(response, "full", {"view": self._page(logged_in), "samples": self.live.samples})
            while True:
                try:
                    kind, data = await asyncio.wait_for(queue.get(), 20)
                except TimeoutError:
                    await response.write(b": keep-alive\n\n")
                    continue
                if kind == "close":
                    break
                await _send(response, kind, self._page(logged_in) if kind == "view" else data)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.live.unsubscribe(queue)
        return response

    def _filters(self, request: web.Request) -> dict:
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
            raise web.HTTPBadRequest(text="since/until: expected dates as YYYY-MM-DD") from None
        return out

    async def sessions_json(self, request: web.Request) -> web.Response:
        show = self._nonce(request) is not None
        rows = await asyncio.to_thread(records.read_sessions, self.live.db_path, **self._filters(request),
                                       limit=MAX_ROWS)
        rows = [dict(r, id_tag=r.get("id_tag") if show else records.mask(r.get("id_tag")),
                     started_local=records.local_text(r.get("started_at"), self.tz),
                     stopped_local=records.local_text(r.get("stopped_at"), self.tz)) for r in rows]
        return web.json_response({"sessions": rows[::-1], "limit": MAX_ROWS})

    async def sessions_csv(self, request: web.Request) -> web.StreamResponse:
        show = self._nonce(request) is not None
        rows = await asyncio.to_thread(records.read_sessions, self.live.db_path, **self._filters(request))
        response = web.StreamResponse(headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": 'attachment; filename="evsed-sessions.csv"'})
        await response.prepare(request)
        for chunk in records.csv_text(rows, show_tags=show):
            await response.write(chunk.encode())
        await response.write_eof()
        return response

    def _month(self, request: web.Request) -> tuple[str, str, str]:
        month = request.query.get("month") or dt.datetime.fromtimestamp(self.clock(), self.tz).strftime("%Y-%m")
        try:
            start, end = records.month_bounds(month, self.tz)
        except ValueError:
            raise web.HTTPBadRequest(text="month: expected YYYY-MM") from None
        return month, records.iso_utc(start), records.iso_utc(end)

    async def report(self, request: web.Request) -> web.Response:
        month, since, until = self._month(request)
        rows = await asyncio.to_thread(records.read_sessions, self.live.db_path, since=since, until=until)
        return web.json_response({"month": month, "report": records.report(rows, self.tz),
                                  "usage": records.usage(rows, month, self.tz)})

    async def usage_svg(self, request: web.Request) -> web.Response:
        month, since, until = self._month(request)
        rows = await asyncio.to_thread(records.read_sessions, self.live.db_path, since=since, until=until)
        usage = records.usage(rows, month, self.tz)
        chart = request.match_info["chart"]
        if chart == "day":
            svg = charts.energy_by_day(usage["energy_wh_by_day"], month)
        elif chart == "hour":
            svg = charts.sessions_by_hour(usage["sessions_by_hour"], month)
        else:
            raise web.HTTPNotFound()
        return web.Response(text=svg, content_type="image/svg+xml", headers={"Cache-Control": "no-cache"})

    # --- login and actions ------------------------------------------------------------
    async def login(self, request: web.Request) -> web.Response:
        address = request.remote or "?"
        wait = self.backoff.wait_s(address, self.monotonic())
        if wait > 0:
            return web.json_response({"ok": False, "error": f"too many wrong passwords; try again in {wait:.0f} s"},
                                     status=429, headers={"Retry-After": str(max(1, round(wait)))})
        try:
            password = (await request.json()).get("password")
        except (ValueError, AttributeError):
            password = None
        if not isinstance(password, str) or len(password) > 1024:
            return web.json_response({"ok": False, "error": "expected {\"password\": \"...\"}"}, status=400)
        async with self._verify_lock:
            good = await asyncio.to_thread(web_settings.verify_password, password, self.settings.password_hash)
        if not good:
            delay = self.backoff.failed(address, self.monotonic())
            log.warning("web.login_failed", address=address, next_try_in_s=delay)
            await asyncio.sleep(FAILED_LOGIN_DELAY_S)
            return web.json_response({"ok": False, "error": "wrong password"}, status=403)
        self.backoff.succeeded(address)
        cookie = self.sessions.issue(self.clock())
        nonce = self.sessions.nonce(cookie, self.clock())
        log.info("web.login", address=address)
        response = web.json_response({"ok": True, "csrf": self.sessions.csrf(nonce)})  # type: ignore[arg-type]
        response.set_cookie(auth.COOKIE, cookie, max_age=int(self.settings.session_hours * 3600), path="/",
                            httponly=True, samesite="Strict", secure=request.secure)
        return response

    async def logout(self, request: web.Request) -> web.Response:
        self.sessions.revoke(request.cookies.get(auth.COOKIE), self.clock())
        response = web.json_response({"ok": True})
        response.del_cookie(auth.COOKIE, path="/")
        return response

    async def command(self, request: web.Request) -> web.Response:
        nonce = self._nonce(request)
        if nonce is None:
            return web.json_response({"ok": False, "error": "log in first"}, status=401)
        if not self.sessions.csrf_ok(nonce, request.headers.get("X-CSRF-Token")):
            return web.json_response({"ok": False, "error": "missing or stale CSRF token; reload the page"},
                                     status=403)
        try:
            body = await request.json()
            req = to_request(body, self.link.hello, dt.datetime.fromtimestamp(self.clock(), dt.timezone.utc))
        except (ValueError, CommandError) as exc:
            return web.json_response({"ok": False, "error": str(exc)}, status=400)
        log.info("web.command", address=request.remote, **req)
        try:
            reply = await self.link.command(req)
        except Exception as exc:  # noqa: BLE001 - the daemon's absence is an answer to show
            log.warning("web.command_failed", error=repr(exc), cmd=req["cmd"])
            return web.json_response({"ok": False, "error": f"the charger did not answer: {exc}"}, status=502)
        self.live.changed()
        return web.json_response(reply)


def _large_allocations_return_to_the_system() -> None:
    """Make glibc serve every block of 1 MiB or more by mmap, so scrypt's 16 MiB goes back at free.
    By default glibc raises that threshold after the first such free and keeps later ones in a
    worker thread's arena (measured: +15 MB RSS per login, for good)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(M_MMAP_THRESHOLD, 1024 * 1024)
    except (OSError, AttributeError):  # not glibc: its allocator decides
        pass


M_MMAP_THRESHOLD = -3  # glibc malloc.h


async def _send(response: web.StreamResponse, kind: str, data: Any) -> None:
    payload = json.dumps(data, separators=(",", ":"), default=str)
    await response.write(f"event: {kind}\ndata: {payload}\n\n".encode())


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
