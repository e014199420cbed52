"""The prices service: a curve from a file or a URL handed to a running daemon over the control
socket; garbage and failures logged with the reason, the curve in force kept."""

from __future__ import annotations

import asyncio
import datetime as dt
import http.server
import json
import threading

import pytest
from structlog.testing import capture_logs

from evsed import config
from evsed.services import prices as service
from evsed.services.link import Link
from tests.test_daemon import running, write_config


def curve(hours: int = 3, price: float = 0.2) -> list[dict]:
    start = dt.datetime.now(dt.timezone.utc).replace(minute=0, second=0, microsecond=0)
    return [{"start": (start + dt.timedelta(hours=h)).isoformat(), "price": price + h / 100} for h in range(hours)]


class Server:
    """A plain HTTP server on loopback answering every GET with `body`."""

    def __init__(self) -> None:
        self.body = b"[]"
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(owner.body)

            def log_message(self, *args: object) -> None:
                pass
        self.httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/prices.json"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def web():
    server = Server()
    yield server
    server.close()


def test_a_curve_from_a_url_reaches_the_daemon_and_garbage_leaves_it_in_force(tmp_path, web):
    cfg = config.load(write_config(tmp_path, f'[prices]\nurl = "{web.url}"\ninterval_s = 900\n'))
    settings = service.parse(cfg)

    async def scenario():
        async with running(cfg) as daemon:
            link = await Link.connect(cfg.store.runtime_dir, "prices")
            try:
                web.body = json.dumps(curve(price=0.21)).encode()
                assert await service.hand_over(settings, link)
                assert daemon.charger.plans.curve.source == "url"
                assert float(daemon.charger.plans.curve.spans[0][2]) == 0.21
                first, second = curve(hours=2)
                for body, event, words in ((json.dumps([second, first]).encode(), "prices.refused",
                                            "entry 1: start: not after entry 0"),  # the daemon's word
                                           (b'[{"start": "soon", "price": 1}]', "prices.refused", "start: expected"),
                                           (b"<html>", "prices.unreadable", "Expecting value"),
                                           (b"[" + b" " * service.MAX_BYTES + b"]", "prices.unreadable", "KiB")):
                    web.body = body
                    with capture_logs() as logs:
                        assert not await service.hand_over(settings, link)
                    said = [e for e in logs if e["event"] == event]
                    assert said and words in said[0]["error"], logs
                    assert float(daemon.charger.plans.curve.spans[0][2]) == 0.21
            finally:
                await link.close()
    asyncio.run(scenario())


def test_a_curve_from_a_file_is_read_and_a_missing_file_is_logged(tmp_path):
    path = tmp_path / "prices.json"
    cfg = config.load(write_config(tmp_path, f'[prices]\nfile = "{path}"\n'))
    settings = service.parse(cfg)

    async def scenario():
        async with running(cfg) as daemon:
            link = await Link.connect(cfg.store.runtime_dir, "prices")
            try:
                with capture_logs() as logs:
                    assert not await service.hand_over(settings, link)
                assert logs[0]["event"] == "prices.unreadable" and "No such file" in logs[0]["error"]
                path.write_text(json.dumps({"prices": curve(hours=48)}))
                assert await service.hand_over(settings, link)
                assert daemon.charger.plans.curve.source == "file" and len(daemon.charger.plans.curve.spans) == 48
            finally:
                await link.close()
    asyncio.run(scenario())


@pytest.mark.parametrize("table, message", [
    ("", "give url (fetched on a schedule) or file"),
    ('url = "https://a.example/p.json"\nfile = "p.json"', "one of them"),
    ('url = "ftp://a.example/p.json"', "expected an http:// or https:// address"),
    ('url = "https://a.example/p.json"\ninterval_s = 5', "interval_s: 5.0 out of range 60..86400"),
    ('file = "p.json"\nheaders = 1', "unknown key"),
])
def test_a_bad_prices_table_names_file_line_and_key(tmp_path, table, message):
    cfg = config.load(write_config(tmp_path, f"[prices]\n{table}\n"))
    with pytest.raises(config.ConfigError) as exc:
        service.parse(cfg)
    assert "[prices]" in str(exc.value) and message in str(exc.value)
