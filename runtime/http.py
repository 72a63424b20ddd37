"""The one place that builds clients for outbound HTTP calls (AI providers, CDN purge APIs):
httpx's API over an aiohttp connection pool.

httpx's own pool (httpcore) looks at every pooled connection, with a socket check each, for
every request it places, so its cost per call grows with the connections open: on this
project's provider simulator, 64 calls in flight cost about 3.5 ms of CPU each through it and
0.35 ms through aiohttp's pool, and one worker's provider calls went from 1 ms to 300 ms at 200
requests/s (`bench/router.py`). Callers keep httpx's requests, responses and exceptions;
`JsonPoster` skips httpx's objects for the calls made per request."""

from __future__ import annotations

import contextlib
import functools
import ssl
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import certifi
import httpx
import orjson


def _timeout(request: httpx.Request) -> aiohttp.ClientTimeout:
    """httpx's per-request timeouts in aiohttp's terms."""
    timeout: dict[str, float | None] = request.extensions.get("timeout", {})
    return _client_timeout(timeout.get("connect"), timeout.get("pool"), timeout.get("read"))


def _client_timeout(
    connect: float | None, pool: float | None, read: float | None
) -> aiohttp.ClientTimeout:
    """Waiting for a pooled connection and connecting share `connect`; `read` bounds each wait
    for the server, as in httpx."""
    return aiohttp.ClientTimeout(
        total=None,
        connect=None if connect is None or pool is None else connect + pool,
        sock_connect=connect,
        sock_read=read,
    )


def _session(max_connections: int, *, decompress: bool) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(
            limit=max_connections,
            limit_per_host=max_connections,
            ssl=ssl.create_default_context(cafile=certifi.where()),
        ),
        auto_decompress=decompress,
    )


@contextlib.contextmanager
def _as_httpx_errors(request: httpx.Request | None = None) -> Iterator[None]:
    """aiohttp's errors as the httpx exceptions callers catch."""
    try:
        yield
    except aiohttp.ServerTimeoutError as error:
        raise _timeout_error(error, request) from error
    except TimeoutError as error:
        raise httpx.TimeoutException(str(error) or "timed out", request=request) from error
    except aiohttp.ClientConnectorError as error:
        raise httpx.ConnectError(str(error), request=request) from error
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError) as error:
        raise httpx.RemoteProtocolError(
            str(error) or type(error).__name__, request=request
        ) from error
    except aiohttp.ClientError as error:
        raise httpx.NetworkError(str(error) or type(error).__name__, request=request) from error


@functools.cache
def _proxy_for(scheme: str, host: str) -> str | None:
    """The proxy HTTP(S)_PROXY and NO_PROXY name for `host`, as httpx's own transport honours
    them; read once per host, since aiohttp's `trust_env` reads them and ~/.netrc in a thread
    on every request (a tenth of a worker's CPU at 200 requests/s)."""
    if urllib.request.proxy_bypass(host):
        return None
    return urllib.request.getproxies().get(scheme)


class AiohttpTransport(httpx.AsyncBaseTransport):
    """An httpx transport that sends through one aiohttp session, at most `max_connections`
    connections per host. Responses are read whole (no caller streams) and left compressed
    for httpx to decode, as its own transport does. aiohttp's errors become httpx's. After
    `aclose`, a request raises `RuntimeError`, as httpx's client does once closed: a session
    opened then would be left for nobody to close."""

    def __init__(self, max_connections: int = 100) -> None:
        self.max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    def _running_session(self) -> aiohttp.ClientSession:
        # Built on first use: an aiohttp session belongs to the event loop it was made in.
        if self._session is None:
            self._session = _session(self.max_connections, decompress=False)
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._closed:
            raise RuntimeError("AiohttpTransport is closed")
        # httpx built them all (Host, Content-Length, Accept-Encoding ...); aiohttp adds
        # only what is missing, and `skip_auto_headers` keeps it from adding defaults of its own.
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw]
        body = await request.aread()
        with _as_httpx_errors(request):
            async with self._running_session().request(
                request.method,
                str(request.url),
                headers=headers,
                data=body or None,
                timeout=_timeout(request),
                allow_redirects=False,
                proxy=_proxy_for(request.url.scheme, request.url.host),
                skip_auto_headers=("Accept-Encoding", "User-Agent", "Content-Type"),
            ) as answer:
                content = await answer.read()
                return httpx.Response(
                    answer.status,
                    headers=[
                        (k.decode("latin-1"), v.decode("latin-1")) for k, v in answer.raw_headers
                    ],
                    content=content,
                    request=request,
                    extensions={"reason_phrase": (answer.reason or "").encode("latin-1")},
                )

    async def aclose(self) -> None:
        self._closed = True
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()


def _timeout_error(
    error: aiohttp.ServerTimeoutError, request: httpx.Request | None
) -> httpx.TimeoutException:
    if isinstance(error, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(str(error) or "connect timed out", request=request)
    return httpx.ReadTimeout(str(error) or "read timed out", request=request)


def outbound_client(max_connections: int = 100, **options: Any) -> httpx.AsyncClient:
    """An `httpx.AsyncClient` (`options` as httpx takes them: base_url, timeout, headers)
    sending through `AiohttpTransport`."""
    return httpx.AsyncClient(transport=AiohttpTransport(max_connections), **options)


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    reason: str
    headers: Mapping[str, str]  # case-insensitive
    content: bytes  # read whole, decompressed


class JsonPoster:
    """POSTs JSON to one server straight through an aiohttp session, for calls made per
    request or per invalidation (AI providers, CDN purges): httpx's request and response
    objects add about 0.25 ms of CPU to each (0.43 against 0.18 ms a call, one at a time, on
    the provider simulator). Its errors are the httpx exceptions `outbound_client` raises."""

    def __init__(self, base_url: str, max_connections: int = 100) -> None:
        self.base_url = base_url.rstrip("/")
        self.max_connections = max_connections
        parts = urllib.parse.urlsplit(self.base_url)
        self._proxy = _proxy_for(parts.scheme, parts.hostname or "")
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    async def post(
        self, path: str, payload: Any, headers: Mapping[str, str], timeout_s: float
    ) -> Answer:
        """POST `payload` as JSON (None: no body) to the server's `path`. After `aclose`, raises
        `RuntimeError`: a session opened then would be left for nobody to close."""
        if self._closed:
            raise RuntimeError(f"JsonPoster for {self.base_url} is closed")
        if self._session is None:  # an aiohttp session belongs to the loop it was made in
            self._session = _session(self.max_connections, decompress=True)
        body = None if payload is None else orjson.dumps(payload)
        if body is not None:
            headers = {**headers, "Content-Type": "application/json"}
        with _as_httpx_errors():
            async with self._session.post(
                self.base_url + path,
                data=body,
                headers=headers,
                timeout=_client_timeout(timeout_s, timeout_s, timeout_s),
                allow_redirects=False,
                proxy=self._proxy,
                skip_auto_headers=() if body is not None else ("Content-Type",),
            ) as answer:
                content = await answer.read()
                return Answer(answer.status, answer.reason or "", answer.headers, content)

    async def aclose(self) -> None:
        self._closed = True
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()
