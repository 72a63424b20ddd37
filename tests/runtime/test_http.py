"""Outbound HTTP through `runtime.http`: httpx's requests, responses and exceptions over an
aiohttp pool, and `JsonPoster` beside it, against a real HTTP server on loopback."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest
from aiohttp import web

from devkit.stack.processes import free_port
from runtime.http import AiohttpTransport, JsonPoster, outbound_client


class Server:
    def __init__(self) -> None:
        self.open_now = 0
        self.open_most = 0

    async def echo(self, request: web.Request) -> web.Response:
        body = await request.read()
        seen = {
            "method": request.method,
            "path": request.path_qs,
            "body": body.decode(),
            "headers": [[k.lower(), v] for k, v in request.headers.items()],
        }
        return web.Response(body=orjson.dumps(seen), content_type="application/json")

    async def compressed(self, _: web.Request) -> web.Response:
        return web.Response(
            body=gzip.compress(b'{"ok": true}'),
            headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
        )

    async def limited(self, _: web.Request) -> web.Response:
        return web.Response(status=429, reason="Slow Down", headers={"Retry-After": "7"})

    async def slow(self, _: web.Request) -> web.Response:
        await asyncio.sleep(2)
        return web.Response(text="late")

    async def held(self, _: web.Request) -> web.Response:
        self.open_now += 1
        self.open_most = max(self.open_most, self.open_now)
        await asyncio.sleep(0.02)
        self.open_now -= 1
        return web.Response(text="ok")


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, Server]]:
    handlers = Server()
    app = web.Application()
    app.router.add_route("*", "/echo", handlers.echo)
    app.router.add_route("*", "/gzip", handlers.compressed)
    app.router.add_route("*", "/limited", handlers.limited)
    app.router.add_route("*", "/slow", handlers.slow)
    app.router.add_route("*", "/held", handlers.held)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}", handlers
    finally:
        await runner.cleanup()


async def test_a_json_post_arrives_once_with_its_headers_and_body(
    server: tuple[str, Server],
) -> None:
    url, _ = server
    async with outbound_client(base_url=url) as client:
        response = await client.post(
            "/echo?a=1", json={"prompt": "hello"}, headers={"x-goog-api-key": "k1"}
        )
    seen = response.json()
    names = [name for name, _ in seen["headers"]]
    assert (response.status_code, seen["method"], seen["path"]) == (200, "POST", "/echo?a=1")
    assert orjson.loads(seen["body"]) == {"prompt": "hello"}
    assert dict(seen["headers"])["x-goog-api-key"] == "k1"
    assert dict(seen["headers"])["content-type"] == "application/json"
    # Each once: httpx built them, and aiohttp must not add its own beside them.
    assert names.count("host") == 1 and names.count("content-length") == 1
    assert int(dict(seen["headers"])["content-length"]) == len(seen["body"])


async def test_a_compressed_answer_is_decoded_by_httpx(server: tuple[str, Server]) -> None:
    url, _ = server
    async with outbound_client(base_url=url) as client:
        response = await client.get("/gzip")
    assert response.json() == {"ok": True}


async def test_status_reason_and_retry_after_reach_the_caller(server: tuple[str, Server]) -> None:
    url, _ = server
    async with outbound_client(base_url=url) as client:
        response = await client.get("/limited")
    assert (response.status_code, response.reason_phrase) == (429, "Slow Down")
    assert response.headers["retry-after"] == "7"


async def test_a_server_slower_than_the_timeout_raises_httpx_read_timeout(
    server: tuple[str, Server],
) -> None:
    url, _ = server
    async with outbound_client(base_url=url) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.get("/slow", timeout=httpx.Timeout(0.2))


async def test_nothing_listening_raises_httpx_connect_error() -> None:
    async with outbound_client(base_url=f"http://127.0.0.1:{free_port()}") as client:
        with pytest.raises(httpx.ConnectError):
            await client.get("/")


async def test_calls_beyond_the_pool_wait_for_a_connection_and_are_all_answered(
    server: tuple[str, Server],
) -> None:
    url, handlers = server
    async with outbound_client(4, base_url=url) as client:
        answers = await asyncio.gather(*(client.get("/held") for _ in range(40)))
    assert [a.status_code for a in answers] == [200] * 40
    assert handlers.open_most == 4


async def test_json_poster_posts_json_and_reads_status_headers_and_body(
    server: tuple[str, Server],
) -> None:
    url, _ = server
    poster = JsonPoster(url + "/")
    try:
        answer = await poster.post("/echo?a=1", {"prompt": "hello"}, {"x-goog-api-key": "k1"}, 5)
        limited = await poster.post("/limited", {}, {}, 5)
        compressed = await poster.post("/gzip", {}, {}, 5)
        empty = await poster.post("/echo", None, {}, 5)
    finally:
        await poster.aclose()
    seen = orjson.loads(answer.content)
    headers = dict(seen["headers"])
    assert (answer.status, seen["method"], seen["path"]) == (200, "POST", "/echo?a=1")
    assert orjson.loads(seen["body"]) == {"prompt": "hello"}
    assert (headers["x-goog-api-key"], headers["content-type"]) == ("k1", "application/json")
    assert (limited.status, limited.reason, limited.headers.get("retry-after")) == (
        429,
        "Slow Down",
        "7",
    )
    assert orjson.loads(compressed.content) == {"ok": True}
    seen_empty = orjson.loads(empty.content)
    assert seen_empty["body"] == ""
    assert "content-type" not in dict(seen_empty["headers"])


async def test_json_poster_raises_the_httpx_errors_providers_catch(
    server: tuple[str, Server],
) -> None:
    url, _ = server
    slow, closed = JsonPoster(url), JsonPoster(f"http://127.0.0.1:{free_port()}")
    try:
        with pytest.raises(httpx.ReadTimeout):
            await slow.post("/slow", {}, {}, 0.2)
        with pytest.raises(httpx.ConnectError):
            await closed.post("/", {}, {}, 5)
    finally:
        await slow.aclose()
        await closed.aclose()


async def test_json_poster_calls_beyond_the_pool_wait_for_a_connection(
    server: tuple[str, Server],
) -> None:
    url, handlers = server
    poster = JsonPoster(url, max_connections=4)
    try:
        answers = await asyncio.gather(*(poster.post("/held", {}, {}, 5) for _ in range(40)))
    finally:
        await poster.aclose()
    assert [a.status for a in answers] == [200] * 40
    assert handlers.open_most == 4


async def test_json_poster_refuses_to_post_after_aclose(server: tuple[str, Server]) -> None:
    """A post after `aclose` would open a new session that nobody closes again."""
    url, _ = server
    poster = JsonPoster(url)
    assert (await poster.post("/echo", {}, {}, 5)).status == 200
    await poster.aclose()
    with pytest.raises(RuntimeError, match=f"JsonPoster for {url} is closed"):
        await poster.post("/echo", {}, {}, 5)
    assert poster._session is None, "no session was opened"


async def test_the_transport_refuses_a_request_after_aclose(server: tuple[str, Server]) -> None:
    """As httpx's client refuses one once closed: a request to the transport after `aclose`
    would open a new session that nobody closes again."""
    url, _ = server
    transport = AiohttpTransport()
    assert (await transport.handle_async_request(httpx.Request("GET", f"{url}/echo"))).is_success
    await transport.aclose()
    with pytest.raises(RuntimeError, match="AiohttpTransport is closed"):
        await transport.handle_async_request(httpx.Request("GET", f"{url}/echo"))
    assert transport._session is None, "no session was opened"
