"""The OpenAI-compatible API on the gateway: `POST /v1/chat/completions`,
`POST /v1/images/generations`, `GET /v1/models`, for the official SDKs (base_url = the gateway's
`/v1`, api_key = a Scribe token).

Each call becomes an AIRequest on `ai.requests` (with its deadline) and is answered from
`ai.responses` by request id (`ai_responses.ResponseWaiter`). An `Idempotency-Key` header makes
the request id (scoped to the user), so a retried call is the same request: a duplicate still in
flight in this process shares its answer, and the router answers a repeated id from its record
of the first, calling the provider once. Errors take OpenAI's shape
`{"error": {"message", "type", "param", "code"}}`; every answer carries `x-scribe-overhead-ms`,
the time spent in Scribe outside the provider call.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import redis.asyncio as aioredis
from aiohttp import web
from aiokafka.errors import KafkaError
from redis.exceptions import RedisError

from runtime.metrics import GATEWAY_REQUESTS, GATEWAY_SECONDS
from runtime.settings import ResolvedSettings
from schemas.events import (
    AIRequest,
    AIResponse,
    Priority,
    Refusal,
    RefusalKind,
    RequestKind,
    ResponseStatus,
    UserTier,
)
from schemas.model_catalog import ModelCatalog, load_catalog
from scribe.gateway.ai_responses import ResponseWaiter
from scribe.gateway.api_auth import ApiAuth, AuthError, Caller
from scribe.gateway.config import MAX_API_TIMEOUT_S, GatewaySettings
from scribe.gateway.ratelimit import TokenBucket
from topics.catalog import AI_REQUESTS
from topics.publisher import Publisher

log = logging.getLogger("scribe.gateway.openai")

AUTO_MODEL = "auto"  # no model named: the router chooses
PRIORITY_HEADER = "x-scribe-priority"
TIMEOUT_HEADER = "x-scribe-timeout-s"
OVERHEAD_HEADER = "x-scribe-overhead-ms"
REQUEST_ID_HEADER = "x-scribe-request-id"
DEFAULT_PRIORITY = {UserTier.PREMIUM: Priority.HIGH, UserTier.FREE: Priority.NORMAL}
MAX_PROMPT_CHARS = 32_000
MAX_IDEMPOTENCY_KEY = 256
# After the deadline, how long an answer may still take to come back through the broker.
ANSWER_GRACE_S = 2.0
RATE_KEY_PREFIX = "api:"  # API buckets apart from the same names' ingest buckets
MESSAGE_ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})


@dataclass
class ApiError(Exception):
    status: int
    message: str
    type: str = "invalid_request_error"
    code: str | None = None
    param: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


def _invalid(message: str, param: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code="invalid_value" if param else None)


def _unknown_model(model: str) -> ApiError:
    return ApiError(
        404,
        f"the model {model!r} does not exist; GET /v1/models lists them (or use auto)",
        code="model_not_found",
        param="model",
    )


def _unavailable(message: str) -> ApiError:
    return ApiError(
        503, message, "service_unavailable", "unavailable", headers={"Retry-After": "1"}
    )


def _seconds_until(moment: datetime, now: datetime) -> str:
    return str(max(1, math.ceil((moment - now).total_seconds())))


def _next_month(now: datetime) -> datetime:
    first = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return (first + timedelta(days=32)).replace(day=1)


def _next_day(now: datetime) -> datetime:
    return now.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)


@dataclass(frozen=True)
class RefusalError:
    """The OpenAI status, error type and code of one refusal kind."""

    status: int
    type: str
    code: str
    default_retry_after_s: int | None = None  # sent when the refusal names no wait


REFUSAL_ERRORS: dict[RefusalKind, RefusalError] = {
    RefusalKind.BUDGET: RefusalError(429, "insufficient_quota", "budget_exceeded"),
    RefusalKind.QUOTA: RefusalError(429, "insufficient_quota", "quota_exceeded"),
    RefusalKind.COST_LIMIT: RefusalError(400, "invalid_request_error", "cost_limit_exceeded"),
    RefusalKind.TIER: RefusalError(403, "permission_error", "tier_not_allowed"),
    RefusalKind.UNAVAILABLE: RefusalError(503, "service_unavailable", "unavailable", 1),
    RefusalKind.RATE_LIMITED: RefusalError(429, "rate_limit_exceeded", "provider_rate_limited"),
    RefusalKind.DEADLINE: RefusalError(504, "timeout", "deadline_exceeded"),
    RefusalKind.PROVIDER_ERROR: RefusalError(502, "api_error", "provider_error"),
    RefusalKind.INTERNAL: RefusalError(500, "api_error", "internal_error"),
}


def refusal(
    response: AIResponse, deadline: datetime, now: datetime | None = None
) -> ApiError | None:
    """The API error an answer that is not OK means: from the router's `refusal` (its kind
    gives the status, type and code; its wait, counted from `completed_at` to `now`, the
    Retry-After)."""
    if response.status is ResponseStatus.OK:
        return None
    message = response.error or f"the request was {response.status.value}"
    now = now or datetime.now(UTC)
    if response.refusal is None:
        return _refusal_from_text(response, message, deadline, now)
    mapped = REFUSAL_ERRORS[response.refusal.kind]
    headers = {}
    retry_after = _retry_after(response.refusal, response.completed_at, now)
    if retry_after is None:
        retry_after = mapped.default_retry_after_s
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return ApiError(mapped.status, message, mapped.type, mapped.code, None, headers)


def _retry_after(refused: Refusal, completed_at: datetime, now: datetime) -> int | None:
    """The refusal's wait less the time its answer took to get here (at least a second)."""
    if refused.retry_after_s is None:
        return None
    elapsed = max(0, math.floor((now - completed_at).total_seconds()))
    return max(1, refused.retry_after_s - elapsed)


def _refusal_from_text(
    response: AIResponse, message: str, deadline: datetime, now: datetime
) -> ApiError:
    """The fallback for a response without `refusal`, from a router older than that field
    (still on ai.responses during an upgrade): the kind read from the error text that router
    wrote (agents/router/policy.py, execute.py of that release). Remove once no router of the
    release before the field runs."""
    if response.status is ResponseStatus.REJECTED:
        if message.startswith("over budget"):
            retry = _seconds_until(_next_month(now), now)
            return ApiError(
                429, message, "insufficient_quota", "budget_exceeded", None, {"Retry-After": retry}
            )
        if message.startswith("no free images left"):
            retry = _seconds_until(_next_day(now), now)
            return ApiError(
                429, message, "insufficient_quota", "quota_exceeded", None, {"Retry-After": retry}
            )
        if message.startswith("no configured provider"):
            return _unavailable(message)
        if message.startswith("no text model is open"):
            return ApiError(403, message, "permission_error", "tier_not_allowed")
        return ApiError(400, message)
    if response.completed_at >= deadline or "deadline" in message:
        return ApiError(504, message, "timeout", "deadline_exceeded")
    return ApiError(502, message, "api_error", "provider_error")


def _error_body(error: ApiError) -> dict[str, Any]:
    return {
        "error": {
            "message": error.message,
            "type": error.type,
            "param": error.param,
            "code": error.code,
        }
    }


def _text_of(content: Any, index: int) -> str:
    """A message's content: a string, or a list of text parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not (isinstance(part, dict) and part.get("type") == "text"):
                raise _invalid(
                    f"messages[{index}].content: only text parts are supported",
                    f"messages[{index}].content",
                )
            text = part.get("text")
            if not isinstance(text, str):
                raise _invalid(f"messages[{index}].content: a text part needs text")
            texts.append(text)
        return "\n".join(texts)
    raise _invalid(
        f"messages[{index}].content must be a string or a list of text parts",
        f"messages[{index}].content",
    )


def chat_prompt(messages: Any) -> str:
    """The conversation as one prompt: a lone user message as it is, else `role: content`
    paragraphs in order."""
    if not isinstance(messages, list) or not messages:
        raise _invalid("messages must be a non-empty list", "messages")
    turns = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in MESSAGE_ROLES:
            raise _invalid(
                f"messages[{index}] needs a role, one of {', '.join(sorted(MESSAGE_ROLES))}",
                f"messages[{index}].role",
            )
        turns.append((message["role"], _text_of(message.get("content"), index)))
    if len(turns) == 1 and turns[0][0] == "user":
        return turns[0][1]
    return "\n\n".join(f"{role}: {text}" for role, text in turns)


def _prompt(text: str, param: str) -> str:
    if not text.strip():
        raise _invalid(f"{param} is empty", param)
    if len(text) > MAX_PROMPT_CHARS:
        raise _invalid(f"{param} is over {MAX_PROMPT_CHARS:,} characters", param)
    return text


def _prompt_of(body: dict[str, Any], kind: RequestKind) -> str:
    if body.get("n", 1) != 1:
        raise _invalid("only n=1 is supported", "n")
    if kind is RequestKind.TEXT:
        if body.get("tools") or body.get("functions"):
            raise _invalid("tools and functions are not supported", "tools")
        return _prompt(chat_prompt(body.get("messages")), "messages")
    if body.get("response_format", "url") not in ("url", None):
        raise _invalid("only response_format=url is supported", "response_format")
    prompt = body.get("prompt")
    if not isinstance(prompt, str):
        raise _invalid("prompt must be a string", "prompt")
    return _prompt(prompt, "prompt")


class OpenAiApi:
    def __init__(
        self,
        settings: GatewaySettings,
        *,
        publisher: Publisher,
        redis: aioredis.Redis,
        waiter: ResponseWaiter,
        catalog: ModelCatalog,
        client_key: web.RequestKey[str],
    ) -> None:
        self.settings = settings
        self.client_key = client_key
        self.publisher = publisher
        self.waiter = waiter
        self.catalog = catalog
        self.auth = ApiAuth(settings.api.auth)
        self.bucket = TokenBucket(redis, settings.api.rate, settings.api.burst)

    # -- endpoints --------------------------------------------------------------------------

    def _listing(self) -> list[dict[str, Any]]:
        created = int(datetime.fromisoformat(self.catalog.version).replace(tzinfo=UTC).timestamp())
        data: list[dict[str, Any]] = [
            {"id": AUTO_MODEL, "object": "model", "created": created, "owned_by": "scribe"}
        ]
        data += [
            {
                "id": m.model,
                "object": "model",
                "created": created,
                "owned_by": m.service,
                "scribe": {"kind": m.kind, "quality": m.quality, "free": m.free},
            }
            for m in self.catalog.models
        ]
        return data

    async def models(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        try:
            await self._caller(request)
        except ApiError as error:
            return _error_response(error, started, 0)
        body = {"object": "list", "data": self._listing()}
        return _json_response(200, body, _overhead(started, 0))

    async def model(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        name = request.match_info["model"]
        try:
            await self._caller(request)
            found = next((m for m in self._listing() if m["id"] == name), None)
            if found is None:
                raise _unknown_model(name)
        except ApiError as error:
            return _error_response(error, started, 0)
        return _json_response(200, found, _overhead(started, 0))

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, RequestKind.TEXT, self._render_chat)

    async def image_generations(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, RequestKind.IMAGE, self._render_image)

    # -- the call ---------------------------------------------------------------------------

    async def _serve(
        self,
        request: web.Request,
        kind: RequestKind,
        render: Callable[
            [web.Request, dict[str, Any], AIResponse, dict[str, str]],
            Awaitable[web.StreamResponse],
        ],
    ) -> web.StreamResponse:
        started = time.perf_counter()
        provider_ms = 0
        try:
            caller = await self._caller(request)
            body = await self._body(request)
            hint = self._model_hint(body, kind)
            prompt = _prompt_of(body, kind)
            priority = self._priority(request, body, caller)
            timeout_s = self._timeout(request)
            request_id = self._request_id(request, caller)
            await self._rate(caller)
            now = datetime.now(UTC)
            deadline = now + timedelta(seconds=timeout_s)
            ai_request = AIRequest(
                request_id=request_id,
                user_id=caller.user_id,
                kind=kind,
                priority=priority,
                prompt=prompt,
                user_tier=caller.tier,
                created_at=now,
                deadline=deadline,
                model_hint=hint,
            )
            response = await self._ask(ai_request, timeout_s)
            provider_ms = response.provider_latency_ms or 0
            refused = refusal(response, deadline)
            if refused is not None:
                raise refused
        except ApiError as error:
            return _error_response(error, started, provider_ms)
        headers = {
            OVERHEAD_HEADER: _overhead(started, provider_ms)[OVERHEAD_HEADER],
            REQUEST_ID_HEADER: response.request_id,
        }
        return await render(request, body, response, headers)

    async def _caller(self, request: web.Request) -> Caller:
        try:
            caller = await self.auth.authenticate(request.headers.get("Authorization"))
        except AuthError as exc:
            if exc.status == 401:
                raise ApiError(
                    401,
                    exc.message,
                    "authentication_error",
                    "invalid_api_key",
                    headers={"WWW-Authenticate": 'Bearer realm="scribe"'},
                ) from None
            raise ApiError(exc.status, exc.message, "permission_error") from None
        request[self.client_key] = caller.user_id  # the access log's client name
        return caller

    async def _body(self, request: web.Request) -> dict[str, Any]:
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise ApiError(413, "the body is too large") from None
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise _invalid(f"the body is not JSON: {exc}") from None
        if not isinstance(body, dict):
            raise _invalid("the body must be a JSON object")
        return body

    def _model_hint(self, body: dict[str, Any], kind: RequestKind) -> str | None:
        model = body.get("model", AUTO_MODEL)
        if not isinstance(model, str) or not model:
            raise _invalid("model must be a model id (see GET /v1/models) or auto", "model")
        if model == AUTO_MODEL:
            return None
        entry = next((m for m in self.catalog.models if m.model == model), None)
        if entry is None:
            raise _unknown_model(model)
        if entry.kind != kind.value:
            raise _invalid(f"{model} is a {entry.kind} model, not a {kind.value} model", "model")
        return model

    def _priority(self, request: web.Request, body: dict[str, Any], caller: Caller) -> Priority:
        raw = request.headers.get(PRIORITY_HEADER) or body.get("priority")
        if raw is None:
            return DEFAULT_PRIORITY[caller.tier]
        try:
            return Priority(str(raw).strip().lower())
        except ValueError:
            known = ", ".join(p.value for p in Priority)
            raise _invalid(f"priority {raw!r} is not one of {known}", "priority") from None

    def _timeout(self, request: web.Request) -> float:
        raw = request.headers.get(TIMEOUT_HEADER)
        if raw is None:
            return self.settings.api.timeout_s
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not 1 <= value <= MAX_API_TIMEOUT_S:
            raise _invalid(
                f"{TIMEOUT_HEADER} must be seconds from 1 to {MAX_API_TIMEOUT_S:g}", TIMEOUT_HEADER
            )
        return value

    @staticmethod
    def _request_id(request: web.Request, caller: Caller) -> str:
        key = request.headers.get("Idempotency-Key")
        if key is None:
            return f"api-{uuid.uuid4().hex}"
        if not key.strip() or len(key) > MAX_IDEMPOTENCY_KEY:
            raise _invalid(
                f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} characters", "Idempotency-Key"
            )
        # Scoped to the user: another user's key can never name this user's request.
        scoped = hashlib.sha256(f"{caller.user_id}\0{key}".encode()).hexdigest()[:40]
        return f"api-idem-{scoped}"

    async def _rate(self, caller: Caller) -> None:
        try:
            decision = await self.bucket.take(RATE_KEY_PREFIX + caller.user_id, 1)
        except RedisError as exc:
            log.error("API rate limiter unavailable: %r", exc)
            raise _unavailable("the rate limiter is unavailable; retry shortly") from None
        if not decision.allowed:
            raise ApiError(
                429,
                f"user {caller.user_id!r} is over its rate of {self.settings.api.rate:g} calls/s "
                f"(burst {self.settings.api.burst}); retry in {decision.wait_ms} ms",
                "rate_limit_exceeded",
                "rate_limit_exceeded",
                headers={"Retry-After": str(decision.retry_after_s)},
            )

    async def _ask(self, ai_request: AIRequest, timeout_s: float) -> AIResponse:
        if not self.waiter.ready:
            raise _unavailable("the AI pipeline is unavailable (ai.responses cannot be read)")
        request_id = ai_request.request_id
        answer, first = self.waiter.expect(request_id)
        if first:
            try:
                acked = await self.publisher.enqueue(ai_request, AI_REQUESTS)
                await asyncio.wait_for(asyncio.shield(acked), self.settings.ack_timeout_s)
            except (KafkaError, TimeoutError) as exc:
                self.waiter.forget(request_id)
                log.error("API request %s not acknowledged by the broker: %r", request_id, exc)
                raise _unavailable(
                    "the AI pipeline is unavailable (the broker did not acknowledge the "
                    "request); retry with the same Idempotency-Key"
                ) from None
        answered = False
        try:
            response = await asyncio.wait_for(answer, timeout_s + ANSWER_GRACE_S)
            answered = True
            return response
        except TimeoutError:
            raise ApiError(
                504,
                f"no answer within the deadline of {timeout_s:g} s",
                "timeout",
                "deadline_exceeded",
            ) from None
        finally:
            if not answered:  # timed out, or the client went away
                self.waiter.forget(request_id)

    # -- answers ----------------------------------------------------------------------------

    async def _render_chat(
        self,
        request: web.Request,
        body: dict[str, Any],
        response: AIResponse,
        headers: dict[str, str],
    ) -> web.StreamResponse:
        created = int(response.completed_at.timestamp())
        completion_id = f"chatcmpl-{response.request_id}"
        model = response.model or AUTO_MODEL
        text = response.output or ""
        scribe = _scribe_extras(response)
        if body.get("stream") is True:
            return await _stream_chat(
                request,
                headers,
                completion_id=completion_id,
                created=created,
                model=model,
                text=text,
                scribe=scribe,
            )
        return _json_response(
            200,
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text, "refusal": None},
                        "finish_reason": "stop",
                        "logprobs": None,
                    }
                ],
                "system_fingerprint": None,
                "scribe": scribe,
            },
            headers,
        )

    async def _render_image(
        self,
        request: web.Request,
        body: dict[str, Any],
        response: AIResponse,
        headers: dict[str, str],
    ) -> web.StreamResponse:
        if response.image_url is None:
            error = ApiError(
                502, "the provider answered without an image", "api_error", "provider_error"
            )
            return _json_response(502, _error_body(error), headers)
        return _json_response(
            200,
            {
                "created": int(response.completed_at.timestamp()),
                "data": [{"url": response.image_url, "revised_prompt": None}],
                "scribe": _scribe_extras(response),
            },
            headers,
        )


def _scribe_extras(response: AIResponse) -> dict[str, Any]:
    """What Scribe adds to OpenAI's shape (the SDK keeps unknown fields)."""
    return {
        "request_id": response.request_id,
        "provider": response.provider,
        "cost_usd": str(response.cost_usd) if response.cost_usd is not None else None,
        "free_tier": response.free_tier,
        "provider_latency_ms": response.provider_latency_ms,
    }


def _chunk(
    completion_id: str, created: int, model: str, delta: dict[str, Any], finish: str | None
) -> bytes:
    chunk = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
    }
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


STREAM_PIECE_CHARS = 64


async def _stream_chat(
    request: web.Request,
    headers: dict[str, str],
    *,
    completion_id: str,
    created: int,
    model: str,
    text: str,
    scribe: dict[str, Any],
) -> web.StreamResponse:
    """Server-sent events in OpenAI's chunk format. The router answers once the provider has
    finished, so the text is sent after completion, in pieces, then `[DONE]`."""
    stream = web.StreamResponse(
        status=200,
        headers={**headers, "Content-Type": "text/event-stream", "Cache-Control": "no-cache"},
    )
    await stream.prepare(request)
    await stream.write(
        _chunk(completion_id, created, model, {"role": "assistant", "content": ""}, None)
    )
    for start in range(0, len(text), STREAM_PIECE_CHARS):
        piece = text[start : start + STREAM_PIECE_CHARS]
        await stream.write(_chunk(completion_id, created, model, {"content": piece}, None))
    last = orjson.loads(_chunk(completion_id, created, model, {}, "stop")[6:])
    last["scribe"] = scribe
    await stream.write(b"data: " + orjson.dumps(last) + b"\n\n")
    await stream.write(b"data: [DONE]\n\n")
    await stream.write_eof()
    return stream


def _overhead(started: float, provider_ms: int) -> dict[str, str]:
    elapsed_ms = (time.perf_counter() - started) * 1000
    return {OVERHEAD_HEADER: f"{max(0.0, elapsed_ms - provider_ms):.1f}"}


def _json_response(status: int, body: dict[str, Any], headers: dict[str, str]) -> web.Response:
    return web.Response(
        body=orjson.dumps(body), status=status, headers=headers, content_type="application/json"
    )


def _error_response(error: ApiError, started: float, provider_ms: int) -> web.Response:
    headers = {**error.headers, **_overhead(started, provider_ms)}
    return _json_response(error.status, _error_body(error), headers)


OPENAI_API = web.AppKey("openai_api", OpenAiApi)


def register(
    app: web.Application,
    settings: GatewaySettings,
    resolved: ResolvedSettings,
    shared: Callable[[web.Application], tuple[Publisher, aioredis.Redis]],
    client_key: web.RequestKey[str],
) -> None:
    """Adds the API's routes, and its ai.responses reader to the app's start-up (after the
    gateway's publisher and Redis client, which `shared` returns)."""

    async def resources(app: web.Application) -> AsyncIterator[None]:
        publisher, redis = shared(app)
        waiter = ResponseWaiter(resolved)
        if settings.api.auth.static or settings.api.auth.jwt.enabled:
            await waiter.start()
        app[OPENAI_API] = OpenAiApi(
            settings,
            publisher=publisher,
            redis=redis,
            waiter=waiter,
            catalog=load_catalog(),
            client_key=client_key,
        )
        try:
            yield
        finally:
            await waiter.stop()

    app.cleanup_ctx.append(resources)
    register_routes(app)


def register_routes(app: web.Application) -> None:
    """The API's routes, answered by the app's `OPENAI_API`."""
    app.router.add_get("/v1/models", _models)
    app.router.add_get("/v1/models/{model:.+}", _model)
    app.router.add_post("/v1/chat/completions", _chat_completions)
    app.router.add_post("/v1/images/generations", _image_generations)


async def _counted(label: str, answer: Awaitable[web.StreamResponse]) -> web.StreamResponse:
    """Counted with the ingest requests, under `topic="openai.<endpoint>"`."""
    started = time.perf_counter()
    response = await answer
    GATEWAY_REQUESTS.labels(topic=label, status=str(response.status)).inc()
    GATEWAY_SECONDS.labels(topic=label).observe(time.perf_counter() - started)
    return response


async def _models(request: web.Request) -> web.StreamResponse:
    return await _counted("openai.models", request.app[OPENAI_API].models(request))


async def _model(request: web.Request) -> web.StreamResponse:
    return await _counted("openai.models", request.app[OPENAI_API].model(request))


async def _chat_completions(request: web.Request) -> web.StreamResponse:
    return await _counted("openai.chat", request.app[OPENAI_API].chat_completions(request))


async def _image_generations(request: web.Request) -> web.StreamResponse:
    return await _counted("openai.images", request.app[OPENAI_API].image_generations(request))
