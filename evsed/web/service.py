"""The web page service: an HTTP server beside the daemon, talking to it only through the Link
(the control socket). Read-only for everyone; actions need a login, a cookie and a CSRF token.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import html
import json
import re
import time
from pathlib import Path
from typing import Any, AsyncIterator, Callable
from zoneinfo import ZoneInfo

import structlog

from evsed import config as configmod
from evsed import protocol as p
from evsed.config import Config
from evsed.errors import StartError
from evsed.web import auth, charts, i18n, memory, records, settings as web_settings
from evsed.web.commands import CommandError, to_request
from evsed.web.httpd import HTTPError, Request, Response, Router, Server, json_response
from evsed.web.live import Live
from evsed.web.rules import rules_view
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
# Password checks running (one at a time: scrypt takes 16 MiB) or waiting; beyond, 503 at once.
# Many addresses guessing make the right password wait its turn or try again, never lock it out.
MAX_PASSWORD_CHECKS = 8
MAX_ROWS = 500
# CSV exports being sent at once: a long one is a connection being answered, which no new
# connection may close, so slow readers must not hold them all (beyond: 503).
MAX_EXPORTS = 4
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
        self._checking: set[str] = set()  # the addresses whose password is being checked: one each
        self._exports = 0  # CSV exports being sent
        self._server: Server | None = None
        self._pages: dict[str, str] = {}  # the page rendered per language
        self.url = ""
        self.router = Router()
        for path, handler in (("/", self.index), ("/static/{name}", self.static), ("/api/view", self.view),
                              ("/events", self.events), ("/api/sessions", self.sessions_json),
                              ("/sessions.csv", self.sessions_csv), ("/api/report", self.report),
                              ("/usage/{chart}.svg", self.usage_svg), ("/api/rules", self.rules),
                              ("/plan/{connector}.svg", self.plan_svg)):
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

    def _page(self, logged_in: bool, msgs: i18n.Messages = i18n.ENGLISH) -> dict:
        now = dt.datetime.fromtimestamp(self.clock(), self.tz)
        view = page_view(self.link.hello, self.live.status, self.live.totals(), now, self.tz,
                         show_tags=logged_in, online=self.live.online, title=self.settings.title, msgs=msgs)
        view["records_version"] = self.live.records_version
        return view

    # --- read-only pages ----------------------------------------------------------------
    async def index(self, request: Request) -> Response:
        """The page in the browser's language (Accept-Language), its script's messages inside it."""
        lang = i18n.negotiate(request.headers.get("accept-language"))
        body = self._pages.get(lang)
        if body is None:
            body = self._pages[lang] = render_page((STATIC_DIR / "index.html").read_text(), i18n.Messages(lang))
        return Response(body, content_type="text/html; charset=utf-8",
                        headers={"Cache-Control": "no-cache", "Vary": "Accept-Language", "Content-Language": lang})

    async def static(self, request: Request, name: str | None = None) -> Response:
        name = name or request.match["name"]
        if name not in STATIC or name == "index.html":
            raise HTTPError(404)
        body = (STATIC_DIR / name).read_bytes()
        return Response(body, content_type=f"{STATIC[name]}; charset=utf-8", headers={"Cache-Control": "no-cache"})

    async def view(self, request: Request) -> Response:
        me = self._me(request)
        return json_response({"me": me, "view": self._page(me["logged_in"], _messages(request)),
                              "samples": self.live.samples})

    async def events(self, request: Request) -> Response:
        logged_in = self._nonce(request) is not None
        queue = self.live.subscribe()
        if queue is None:
            raise HTTPError(503, "too many open pages")
        return Response(self._events(queue, logged_in, _messages(request)), content_type="text/event-stream",
                        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
                        on_close=lambda: self.live.unsubscribe(queue))

    async def _events(self, queue: asyncio.Queue, logged_in: bool, msgs: i18n.Messages) -> AsyncIterator[bytes]:
        yield _event("full", {"view": self._page(logged_in, msgs), "samples": self.live.samples})
        while True:
            try:
                async with asyncio.timeout(20):
                    kind, data = await queue.get()
            except TimeoutError:
                yield b": keep-alive\n\n"
                continue
            if kind == "close":
                return
            yield _event(kind, self._page(logged_in, msgs) if kind == "view" else data)

    def _filters(self, request: Request, logged_in: bool) -> dict:
        q = request.query
        out: dict[str, Any] = {"card": q.get("card", "").strip()[:64] or None}
        if out["card"] and not logged_in:  # else anyone could ask which UIDs charged here, and when
            raise HTTPError(401, "log in to filter by card")
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
        """A page of sessions, newest first: `limit` (at most MAX_ROWS, the default) before session
        `before` (none: the newest); `next` names the page's last session when older ones follow."""
        show = self._nonce(request) is not None
        limit = _int_param(request, "limit", 1, MAX_ROWS) or MAX_ROWS
        before = _int_param(request, "before", 1, 2**62)
        rows, last = await asyncio.to_thread(records.newest_json, self.live.db_path, self.tz, show_tags=show,
                                             limit=limit, before=before, **self._filters(request, show))
        return Response(f'{{"sessions": {rows}, "limit": {limit}, "next": {json.dumps(last)}}}',
                        content_type="application/json; charset=utf-8")

    async def sessions_csv(self, request: Request) -> Response:
        """Every session the filters name, streamed a page at a time: memory does not grow with them."""
        show = self._nonce(request) is not None
        filters = self._filters(request, show)
        if self._exports >= MAX_EXPORTS:
            raise HTTPError(503, "too many CSV exports at once; try again", headers={"Retry-After": "5"})

        async def parts() -> AsyncIterator[bytes]:
            after: int | None = None
            while True:
                part, after = await asyncio.to_thread(records.csv_page, self.live.db_path, self.tz, show_tags=show,
                                                      after_id=after, limit=MAX_ROWS, **filters)
                yield part
                if after is None:
                    memory.trim()  # the pages' rows are garbage now
                    return
        self._exports += 1
        return Response(parts(), content_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": 'attachment; filename="evsed-sessions.csv"'},
                        on_close=self._export_done)

    def _export_done(self) -> None:
        self._exports -= 1

    def _month(self, request: Request) -> tuple[str, str, str]:
        month = request.query.get("month") or dt.datetime.fromtimestamp(self.clock(), self.tz).strftime("%Y-%m")
        try:
            start, end = records.month_bounds(month, self.tz)
        except ValueError:
            raise HTTPError(400, "month: expected YYYY-MM") from None
        return month, records.iso_utc(start), records.iso_utc(end)

    def _usage(self, month: str, since: str, until: str) -> dict:
        """The month's usage, summed a row at a time (in a thread)."""
        return records.usage(records.each_session(self.live.db_path, since=since, until=until), month, self.tz)

    async def report(self, request: Request) -> Response:
        month, since, until = self._month(request)
        show = self._nonce(request) is not None
        report = await asyncio.to_thread(records.report, self.live.db_path, since, until, self.tz, show_tags=show)
        return json_response({"month": month, **report})

    async def rules(self, request: Request) -> Response:
        """The cards (with UIDs), groups and windows in force: for the logged-in owner only."""
        if self._nonce(request) is None:
            return json_response({"ok": False, "error": "log in first"}, status=401)
        try:  # the file as it is now: a card learned on this page was written after this service started
            current = await asyncio.to_thread(configmod.load, self.config.path)
        except (configmod.ConfigError, OSError) as exc:
            log.warning("web.config_unreadable", error=str(exc)[:300])
            current = self.config
        return json_response(rules_view(current))

    async def usage_svg(self, request: Request) -> Response:
        month, since, until = self._month(request)
        usage = await asyncio.to_thread(self._usage, month, since, until)
        chart, msgs = request.match["chart"], _messages(request)
        if chart == "day":
            svg = charts.energy_by_day(usage["energy_wh_by_day"], month, msgs("page.energy_per_day"))
        elif chart == "hour":
            svg = charts.sessions_by_hour(usage["sessions_by_hour"], month, msgs("page.sessions_by_hour"))
        else:
            raise HTTPError(404)
        return Response(svg, content_type="image/svg+xml; charset=utf-8", headers={"Cache-Control": "no-cache"})

    async def plan_svg(self, request: Request) -> Response:
        """A connector's charging plan: the prices to its departure (the daemon's `plans`), its
        planned slots filled in."""
        cid, status = request.match["connector"], self.live.status
        conn = status.connector(int(cid)) if status is not None and cid.isdigit() else None
        if conn is None or conn.plan is None:
            raise HTTPError(404)
        try:
            reply = await self.link.command(p.Plans())
        except Exception as exc:  # noqa: BLE001 - the daemon's absence is an answer to show
            raise HTTPError(502, f"the charger did not answer: {exc}") from None
        shown = reply.plans if isinstance(reply, p.PlansReply) else ()
        plan = next((plan for plan in shown if plan.connector == conn.id), conn.plan)  # with its first 96 slots
        curve = reply.curve if isinstance(reply, p.PlansReply) else ()
        svg = charts.plan_chart(plan, curve, self.tz, _messages(request)("view.plan.chart"))
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
        if address in self._checking:  # guesses sent side by side would all pass before the back-off
            return json_response({"ok": False, "error": "a password from this address is being checked"},
                                 status=429, headers={"Retry-After": "1"})
        if len(self._checking) >= MAX_PASSWORD_CHECKS:
            return json_response({"ok": False, "error": "busy checking other passwords; try again"},
                                 status=503, headers={"Retry-After": "1"})
        self._checking.add(address)
        try:
            async with self._verify_lock:
                good = await asyncio.to_thread(web_settings.verify_password, password, self.settings.password_hash)
            if not good:
                delay = self.backoff.failed(address, self.monotonic())
                log.warning("web.login_failed", address=address, next_try_in_s=delay)
                await asyncio.sleep(FAILED_LOGIN_DELAY_S)
                return json_response({"ok": False, "error": "wrong password"}, status=403)
        finally:
            self._checking.discard(address)
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


def _int_param(request: Request, name: str, low: int, high: int) -> int | None:
    """An integer query parameter within [low, high] (None: not given); 400 naming it otherwise."""
    text = request.query.get(name, "")
    if not text:
        return None
    if not text.isdigit() or not low <= int(text) <= high:
        raise HTTPError(400, f"{name}: expected a whole number from {low} to {high}")
    return int(text)


def _messages(request: Request) -> i18n.Messages:
    return i18n.Messages(i18n.negotiate(request.headers.get("accept-language")))


PLACEHOLDER = re.compile(r"\{\{([a-z0-9_.+]+)\}\}")


def render_page(template: str, msgs: i18n.Messages) -> str:
    """index.html with {{key}} filled from the messages (HTML-escaped), {{lang}}, and {{messages}}: the
    script's messages (js.* and page.*) as JSON inside a data block."""
    script = {k: v for k, v in msgs.table.items() if k.startswith(("js.", "page."))}
    data = json.dumps(script, ensure_ascii=False, separators=(",", ":")).replace("</", "<\\/")

    def fill(m: re.Match[str]) -> str:
        key = m.group(1)
        if key == "lang":
            return msgs.lang
        if key == "messages":
            return data
        return html.escape(msgs(key))
    return PLACEHOLDER.sub(fill, template)


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
