"""The OpenAI-compatible API driven by the official `openai` SDK (async and sync clients), on the
embedded stack: the gateway publishes to ai.requests, the shared worker's router calls the
provider simulator, and the answer comes back through ai.responses."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace

import httpx
import jwt
import openai
import pytest
import redis.asyncio as aioredis
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from devkit.harness import WorkerProcess
from runtime.settings import ResolvedSettings, Settings
from schemas.model_catalog import load_catalog
from scribe.gateway.access import TokenBook
from scribe.gateway.ai_responses import ResponseWaiter
from scribe.gateway.api_auth import ApiAuthSettings, JwtSettings
from scribe.gateway.config import ApiSettings, GatewaySettings
from scribe.gateway.openai_api import OPENAI_API, OVERHEAD_HEADER, OpenAiApi, register_routes
from scribe.gateway.server import RunningGateway
from topics.admin import ensure_topics
from topics.publisher import Publisher

pytestmark = pytest.mark.integration

STATIC_TOKEN = f"static-{uuid.uuid4().hex}"
SIGNING_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PUBLIC_PEM = (
    SIGNING_KEY.public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    .decode()
)


def _jwt(sub: str, tier: str = "premium") -> str:
    claims = {"sub": sub, "tier": tier, "exp": int(time.time()) + 600}
    return jwt.encode(claims, SIGNING_KEY, algorithm="RS256")


def _resolved(services: dict[str, str]) -> ResolvedSettings:
    return Settings(
        kafka_url=services["SCRIBE_KAFKA_URL"],
        database_url=services["SCRIBE_DATABASE_URL"],
        redis_url=services["SCRIBE_REDIS_URL"],
    ).require()


def _settings(user: str, rate: float = 100.0, burst: int = 100) -> GatewaySettings:
    auth = replace(
        ApiAuthSettings.parse(f"{user}:{STATIC_TOKEN}:free"), jwt=JwtSettings(key=PUBLIC_PEM)
    )
    return GatewaySettings(
        TokenBook([]), port=0, api=ApiSettings(auth=auth, rate=rate, burst=burst)
    )


@asynccontextmanager
async def _gateway(services: dict[str, str], settings: GatewaySettings) -> AsyncIterator[str]:
    resolved = _resolved(services)
    await ensure_topics(resolved)
    async with RunningGateway(settings, resolved) as running:
        yield f"{running.url}/v1"


@pytest.fixture
async def api(services: dict[str, str], worker: WorkerProcess) -> AsyncIterator[str]:
    """The API's base URL; the static token is user `api-<hex>`'s, free tier."""
    async with _gateway(services, _settings(f"api-{uuid.uuid4().hex[:12]}")) as url:
        yield url


def _async_client(url: str, token: str = STATIC_TOKEN) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=url, api_key=token, max_retries=0, timeout=60)


def _provider_calls(services: dict[str, str], tag: str) -> int:
    calls = httpx.get(f"{services['SCRIBE_PROVIDER_URL']}/_sim/calls", timeout=30).json()
    return sum(1 for c in calls if c["prompt_tag"] == tag)


async def test_chat_completion_async_client(api: str, services: dict[str, str]) -> None:
    tag = uuid.uuid4().hex
    async with _async_client(api) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="auto",
            messages=[
                {"role": "system", "content": "Answer briefly."},
                {"role": "user", "content": f"[tag:{tag}] Name a colour."},
            ],
        )
        completion = raw.parse()
    assert raw.status_code == 200
    assert float(raw.headers[OVERHEAD_HEADER]) >= 0
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model in {"gemini-2.5-flash-lite", "gemini-2.5-flash"}
    assert _provider_calls(services, tag) == 1


async def test_stream_with_sync_client_and_jwt(api: str, services: dict[str, str]) -> None:
    tag = uuid.uuid4().hex
    user = f"jwt-{uuid.uuid4().hex[:12]}"

    def stream() -> list[openai.types.chat.ChatCompletionChunk]:
        with openai.OpenAI(base_url=api, api_key=_jwt(user), max_retries=0, timeout=60) as sync:
            chunks = sync.chat.completions.create(
                model="gemini-2.5-flash",
                messages=[{"role": "user", "content": f"[tag:{tag}] Tell me a story."}],
                stream=True,
                extra_headers={"x-scribe-priority": "urgent"},
            )
            return list(chunks)

    # The sync client blocks; the gateway runs on this test's event loop.
    chunks = await asyncio.to_thread(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert [c.choices[0].finish_reason for c in chunks[:-1]] == [None] * (len(chunks) - 1)
    assert _provider_calls(services, tag) == 1


async def test_image_generation_and_models(api: str) -> None:
    async with _async_client(api) as client:
        models = await client.models.list()
        free_image = await client.models.retrieve("google/gemini-2.5-flash-image-preview:free")
        with pytest.raises(openai.NotFoundError):
            await client.models.retrieve("gpt-nonexistent")
        image = await client.images.generate(prompt=f"[tag:{uuid.uuid4().hex}] a red fox")
    ids = {m.id for m in models.data}
    assert {"auto", "gemini-2.5-flash", "gemini-2.5-flash-image"} <= ids
    assert free_image.owned_by == "openrouter"
    assert image.data is not None and image.data[0].url
    async with httpx.AsyncClient() as http:
        fetched = await http.get(image.data[0].url)
    assert fetched.status_code == 200 and fetched.content.startswith(b"\x89PNG")


async def test_refusals_raise_the_sdk_errors(api: str) -> None:
    async with _async_client(api) as client:
        with pytest.raises(openai.BadRequestError) as bad:
            await client.chat.completions.create(model="auto", messages=[])
        with pytest.raises(openai.NotFoundError) as unknown:
            await client.chat.completions.create(
                model="gpt-nonexistent", messages=[{"role": "user", "content": "hi"}]
            )
        with pytest.raises(openai.BadRequestError) as wrong_kind:
            await client.images.generate(prompt="a fox", model="gemini-2.5-flash")
    async with _async_client(api, token="not-a-token-of-anyone") as stranger:
        with pytest.raises(openai.AuthenticationError):
            await stranger.models.list()
    assert bad.value.status_code == 400 and bad.value.param == "messages"
    assert unknown.value.status_code == 404 and unknown.value.code == "model_not_found"
    assert wrong_kind.value.param == "model"
    body = unknown.value.body
    assert isinstance(body, dict) and set(body) == {"message", "type", "param", "code"}
    assert OVERHEAD_HEADER in unknown.value.response.headers


async def test_over_the_rate_is_a_rate_limit_error_with_retry_after(
    services: dict[str, str], worker: WorkerProcess
) -> None:
    settings = _settings(f"slow-{uuid.uuid4().hex[:12]}", rate=0.001, burst=1)
    async with _gateway(services, settings) as url, _async_client(url) as client:
        message = [{"role": "user", "content": f"[tag:{uuid.uuid4().hex}] hi"}]
        first = await client.chat.completions.create(model="auto", messages=message)  # type: ignore[arg-type]
        with pytest.raises(openai.RateLimitError) as limited:
            await client.chat.completions.create(model="auto", messages=message)  # type: ignore[arg-type]
    assert first.choices[0].message.content
    assert limited.value.status_code == 429
    assert int(limited.value.response.headers["Retry-After"]) == 1000  # 1 call at 0.001/s
    assert limited.value.code == "rate_limit_exceeded"


async def test_same_idempotency_key_is_answered_once(api: str, services: dict[str, str]) -> None:
    tag = uuid.uuid4().hex
    key = {"Idempotency-Key": f"retry-{tag}"}
    message = [{"role": "user", "content": f"[tag:{tag}] [sim:slow=300] Say hello."}]
    async with _async_client(api) as client:

        async def call() -> openai.types.chat.ChatCompletion:
            return await client.chat.completions.create(
                model="auto",
                messages=message,  # type: ignore[arg-type]
                extra_headers=key,
            )

        # Two at once (the second joins the first), then a retry once both were answered:
        # it goes to the router again, which answers the known request id from its record.
        together = await asyncio.gather(call(), call())
        retried = await call()
    answers = [*together, retried]
    assert len({a.id for a in answers}) == 1
    assert len({a.choices[0].message.content for a in answers}) == 1
    assert _provider_calls(services, tag) == 1


async def test_past_the_deadline_is_a_gateway_timeout(api: str) -> None:
    async with _async_client(api) as client:
        with pytest.raises(openai.APIStatusError) as late:
            await client.chat.completions.create(
                model="auto",
                messages=[
                    {"role": "user", "content": f"[tag:{uuid.uuid4().hex}] [sim:slow=4000] hi"}
                ],
                extra_headers={"x-scribe-timeout-s": "1"},
            )
    assert late.value.status_code == 504 and late.value.code == "deadline_exceeded"
    # The router's refusal (its reasons in the message), not the gateway giving up waiting.
    assert "no model could serve the request" in late.value.message, late.value.message


async def test_an_unreadable_pipeline_is_503_with_retry_after(
    services: dict[str, str], redis_client: aioredis.Redis
) -> None:
    """ai.responses not readable (the reader never started): 503 before anything is published."""
    resolved = _resolved(services)
    api = OpenAiApi(
        _settings(f"down-{uuid.uuid4().hex[:12]}"),
        publisher=Publisher(resolved),  # never started: publishing would raise
        redis=redis_client,
        waiter=ResponseWaiter(resolved),  # never started: not ready
        catalog=load_catalog(),
        client_key=web.RequestKey("client", str),
    )
    app = web.Application()
    app[OPENAI_API] = api
    register_routes(app)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
        async with _async_client(url) as client:
            with pytest.raises(openai.InternalServerError) as down:
                await client.chat.completions.create(
                    model="auto", messages=[{"role": "user", "content": "hi"}]
                )
    finally:
        await runner.cleanup()
    assert down.value.status_code == 503 and down.value.code == "unavailable"
    assert down.value.response.headers["Retry-After"] == "1"
    assert OVERHEAD_HEADER in down.value.response.headers
