"""The web service's HTTP/1.1 on raw loopback sockets: the answers every route shares (HEAD, 400,
404, 405, 413, 431), keep-alive, the limits on slow and idle peers, and the connection cap."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import pytest

from evsed.web import httpd
from test_web_service import login, run


async def connect(service):
    url = urlsplit(service.url)
    return await asyncio.open_connection(url.hostname, url.port)


async def exchange(service, raw: bytes) -> bytes:
    """Send raw bytes and read until the server closes the connection."""
    reader, writer = await connect(service)
    writer.write(raw)
    try:
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()


async def response(reader) -> tuple[int, dict[str, str], bytes]:
    """One response with a Content-Length body from a kept-alive connection."""
    head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).decode("latin-1")
    lines = head.split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return int(lines[0].split()[1]), headers, body


def status(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1])


def test_head_answers_the_get_headers_without_a_body(tmp_path):
    async def body(service, client, link):
        raw = await exchange(service, b"HEAD /api/view HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        head, _, rest = raw.partition(b"\r\n\r\n")
        assert status(raw) == 200 and b"application/json" in head and rest == b""
        assert int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0]) > 0
    run(tmp_path, body)


def test_an_unknown_path_is_404_and_a_wrong_method_405_naming_the_allowed_ones(tmp_path):
    async def body(service, client, link):
        async with client.get("/nothing-here") as r:
            assert r.status == 404
        async with client.get("/login") as r:
            assert r.status == 405 and r.headers["Allow"] == "POST"
        async with client.delete("/api/view") as r:
            assert r.status == 405 and r.headers["Allow"] == "GET,HEAD"
    run(tmp_path, body)


def test_every_answer_carries_the_security_headers_even_an_error(tmp_path):
    async def body(service, client, link):
        for path in ("/", "/nothing-here", "/static/nope.js"):
            async with client.get(path) as r:
                assert r.headers["X-Frame-Options"] == "DENY"
                assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]
    run(tmp_path, body)


def test_a_body_over_16_kib_is_refused_with_413(tmp_path):
    async def body(service, client, link):
        csrf = await login(client)
        async with client.post("/api/command", data=b"{" + b" " * (16 * 1024) + b"}",
                               headers={"X-CSRF-Token": csrf, "Content-Type": "application/json"}) as r:
            assert r.status == 413
        chunked = (b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                   b"Transfer-Encoding: chunked\r\n\r\n" + b"2000\r\n" + b" " * 0x2000 + b"\r\n")
        raw = await exchange(service, chunked + b"2001\r\n" + b" " * 0x2001 + b"\r\n0\r\n\r\n")  # no length told
        assert status(raw) == 413
    run(tmp_path, body)


def test_a_header_block_over_8_kib_is_refused_with_431(tmp_path):
    async def body(service, client, link):
        raw = await exchange(service, b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n")
        assert status(raw) == 431
    run(tmp_path, body)


@pytest.mark.parametrize("request_line", [b"GARBAGE\r\n\r\n", b"GET / HTTP/1.1\r\n\r\n",  # no Host
                                          b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n",
                                          b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"])
def test_a_malformed_request_is_400_and_the_connection_closes(tmp_path, request_line):
    async def body(service, client, link):
        raw = await exchange(service, request_line)  # returns only once the server has closed
        assert status(raw) == 400
    run(tmp_path, body)


def test_keep_alive_serves_requests_one_after_another_on_one_connection(tmp_path):
    async def body(service, client, link):
        reader, writer = await connect(service)
        try:
            writer.write(b"GET /api/view HTTP/1.1\r\nHost: x\r\n\r\nGET /static/app.css HTTP/1.1\r\nHost: x\r\n\r\n")
            first, second = await response(reader), await response(reader)
            assert first[0] == second[0] == 200 and second[1]["content-type"].startswith("text/css")
            writer.write(b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await response(reader))[0] == 404
        finally:
            writer.close()
    run(tmp_path, body)


def test_an_http_1_0_client_gets_its_answer_and_a_close(tmp_path):
    async def body(service, client, link):
        raw = await exchange(service, b"GET /api/view HTTP/1.0\r\n\r\n")
        assert status(raw) == 200 and raw.endswith(b"}")
    run(tmp_path, body)


def test_a_request_sent_too_slowly_gets_408(tmp_path, monkeypatch):
    monkeypatch.setattr(httpd, "REQUEST_TIMEOUT_S", 0.2)

    async def body(service, client, link):
        raw = await exchange(service, b"GET / HTTP/1.1\r\nHost: x\r\n")  # never finished
        assert status(raw) == 408
    run(tmp_path, body)


def test_an_idle_kept_alive_connection_is_closed(tmp_path, monkeypatch):
    monkeypatch.setattr(httpd, "IDLE_TIMEOUT_S", 0.2)

    async def body(service, client, link):
        reader, writer = await connect(service)
        writer.write(b"GET /api/view HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await response(reader))[0] == 200
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the server
        writer.close()
    run(tmp_path, body)


def test_when_every_connection_is_answering_a_new_one_gets_503(tmp_path, monkeypatch):
    monkeypatch.setattr(httpd, "MAX_CONNECTIONS", 2)

    async def body(service, client, link):
        held = [await connect(service) for _ in range(2)]
        for reader, writer in held:  # two open pages: live streams, being answered
            writer.write(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
            await asyncio.wait_for(reader.readuntil(b"event: full"), 5)
        assert status(await exchange(service, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")) == 503
        held[0][1].close()
        await asyncio.wait_for(held[0][1].wait_closed(), 5)
        for k in range(100):  # the server notices the close at its next write, then has room again
            link.plug(1) if k % 2 == 0 else link.unplug(1)
            if status(await exchange(service, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")) == 200:
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("no room after a connection closed")
        held[1][1].close()
    run(tmp_path, body)


def test_at_the_cap_the_oldest_idle_connection_makes_room(tmp_path, monkeypatch):
    monkeypatch.setattr(httpd, "MAX_CONNECTIONS", 2)

    async def body(service, client, link):
        held = [await connect(service) for _ in range(2)]
        for reader, writer in held:  # kept alive after their answer: idle
            writer.write(b"GET /api/view HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await response(reader))[0] == 200
        assert status(await exchange(service, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")) == 200
        assert await asyncio.wait_for(held[0][0].read(), 5) == b""  # the oldest was closed for it
        held[1][1].write(b"GET /api/view HTTP/1.1\r\nHost: x\r\n\r\n")  # the other still served
        assert (await response(held[1][0]))[0] == 200
        for _, writer in held:
            writer.close()
    run(tmp_path, body)


def test_a_new_connection_that_sends_nothing_is_closed_by_the_request_deadline(tmp_path, monkeypatch):
    monkeypatch.setattr(httpd, "REQUEST_TIMEOUT_S", 0.2)  # the idle timeout stays 30 s

    async def body(service, client, link):
        reader, writer = await connect(service)
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed, with no answer to nothing
        writer.close()
    run(tmp_path, body)


@pytest.mark.parametrize("addresses", [1, 30])
def test_the_page_stays_usable_under_300_slow_connections(tmp_path, addresses):
    # 300 connections that send their request's first line and stall (slowloris), from one
    # address or thirty: the per-address cap holds one address's, and at the overall cap the
    # oldest still waiting goes for a new one; a page from another address is served at once.
    async def body(service, client, link):
        url = urlsplit(service.url)
        slow = []
        for k in range(300):
            source = f"127.0.1.{1 + k % addresses}"
            reader, writer = await asyncio.open_connection(url.hostname, url.port, local_addr=(source, 0))
            writer.write(b"GET /api/view HTTP/1.1\r\n")
            slow.append(writer)
        try:  # accepted in order: the page's connection comes after all 300
            raw = await exchange(service, b"GET /api/view HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert status(raw) == 200
            assert service._server is not None and service._server.evicted >= 300 - httpd.MAX_CONNECTIONS
        finally:
            for writer in slow:
                writer.close()
    run(tmp_path, body)


def test_a_closed_page_gives_back_its_live_stream(tmp_path):
    async def body(service, client, link):
        reader, writer = await connect(service)
        writer.write(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b"event: full" in await asyncio.wait_for(reader.readuntil(b"event: full"), 5)
        assert len(service.live._subscribers) == 1
        writer.close()
        for k in range(250):  # a write or two later, the server finds the page gone
            link.plug(1) if k % 2 == 0 else link.unplug(1)
            await asyncio.sleep(0.02)
            if not service.live._subscribers:
                break
        assert not service.live._subscribers
    run(tmp_path, body)


def test_stopping_the_service_ends_the_open_live_streams(tmp_path):
    async def body(service, client, link):
        reader, writer = await connect(service)
        writer.write(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
        await asyncio.wait_for(reader.readuntil(b"event: full"), 5)
        await asyncio.wait_for(service.stop(), 5)
        await asyncio.wait_for(reader.read(), 5)  # the stream ends instead of hanging
        assert not service.live._subscribers
        writer.close()
    run(tmp_path, body)
