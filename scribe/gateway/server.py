"""The HTTP ingest gateway (aiohttp): `POST /v1/events/{topic}` for services that cannot speak
Kafka, `POST /v1/cloudevents` for CloudEvents (each event's type names its topic), plus the
contract (`GET /v1/schemas/{topic}`), `/health` and `/metrics`.

A request is answered in this order: 401 (no valid bearer token), 404 (not an input topic),
403 (the token may not publish to it), 413 (too large), 415 (not JSON or NDJSON), 429 (over
the client's rate, counted per event), 400 (any invalid event: nothing published), 503 (the
broker did not acknowledge in time; retry), else 202 with the ids once the broker acknowledged.
CloudEvents are answered in the same order, except that there is no 404 and 403 comes once the
body was read, since the topics are named by the events' types.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse
from aiokafka.errors import KafkaError
from opentelemetry.trace import Span
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError

from runtime import tracing
from runtime.metrics import GATEWAY_EVENTS, GATEWAY_REQUESTS, GATEWAY_SECONDS
from runtime.service import freeze_long_lived
from runtime.settings import ResolvedSettings
from schemas.events import Event
from schemas.json_schema import FAMILIES, SCHEMA_DIR, file_name
from scribe.gateway import openai_api
from scribe.gateway.access import PUBLISHABLE, Client
from scribe.gateway.cloud_events import Accepted, event_type, read_cloudevents, translate
from scribe.gateway.config import GatewaySettings
from scribe.gateway.ingest import (
    BodyError,
    ItemError,
    parse_items,
    receipt_id,
    rejection,
    validate_items,
)
from scribe.gateway.ratelimit import TokenBucket
from topics.catalog import TOPICS, TopicSpec, topic
from topics.publisher import Header, Publisher, publisher_for

log = logging.getLogger("scribe.gateway")
CLIENT_KEY = web.RequestKey("scribe_client", str)  # the client's name, for the access log
CLOUDEVENTS_LABEL = "cloudevents"  # the `topic` label of requests to /v1/cloudevents


@dataclass
class Answer:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


def _error(status: int, message: str, **headers: str) -> Answer:
    return Answer(status, {"error": message}, headers)


@dataclass(frozen=True)
class Outgoing:
    """One record to publish: the event, its topic, its headers."""

    spec: TopicSpec
    event: Event
    headers: list[Header] = field(default_factory=list)


class Gateway:
    """The request logic; the aiohttp wiring is in `create_app`."""

    def __init__(
        self, settings: GatewaySettings, publisher: Publisher, redis: aioredis.Redis
    ) -> None:
        self.settings = settings
        self.publisher = publisher
        self.redis = redis
        self.bucket = TokenBucket(redis, settings.rate, settings.burst)

    def _authenticate(self, request: web.Request) -> Client | Answer:
        client = self.settings.tokens.authenticate(request.headers.get("Authorization"))
        if client is None:
            return _error(
                401,
                "a valid bearer token is required: Authorization: Bearer <token>",
                **{"WWW-Authenticate": 'Bearer realm="scribe"'},
            )
        request[CLIENT_KEY] = client.name
        return client

    async def _body(self, request: web.Request) -> bytes | Answer:
        too_large = f"the body is over the limit of {self.settings.max_body_bytes:,} bytes"
        if (request.content_length or 0) > self.settings.max_body_bytes:
            return _error(413, too_large)
        try:
            return await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _error(413, too_large)

    async def ingest(self, request: web.Request, topic_name: str) -> Answer:
        client = self._authenticate(request)
        if isinstance(client, Answer):
            return client
        if topic_name not in PUBLISHABLE:
            return _error(
                404,
                f"{topic_name!r} is not an input topic; publish to one of "
                f"{', '.join(sorted(PUBLISHABLE))}",
            )
        if not client.may_publish(topic_name):
            return _error(403, f"client {client.name!r} may not publish to {topic_name}")
        body = await self._body(request)
        if isinstance(body, Answer):
            return body
        return await self._accept(client, topic_name, body, request.content_type)

    async def ingest_cloudevents(self, request: web.Request) -> Answer:
        """Structured, batch or binary CloudEvents; each event's type names its topic."""
        client = self._authenticate(request)
        if isinstance(client, Answer):
            return client
        body = await self._body(request)
        if isinstance(body, Answer):
            return body
        try:
            received = read_cloudevents(
                request.headers, body, self.settings.max_body_bytes, self.settings.max_events
            )
        except BodyError as exc:
            if exc.status != 400:
                return _error(exc.status, exc.message)
            refused = await self._over_limit(client, 1)  # as for a body that is not JSON
            return refused or _error(400, exc.message)
        known = [t for t in map(event_type, received) if t is not None]
        forbidden = sorted({t.topic.name for t in known if not client.may_publish(t.topic.name)})
        if forbidden:
            return _error(
                403,
                f"client {client.name!r} may not publish to {', '.join(forbidden)}, the topic of "
                "CloudEvents type(s) "
                + ", ".join(sorted({t.name for t in known if t.topic.name in forbidden})),
            )
        refused = await self._over_limit(client, len(received))
        if refused:
            return refused
        translated = [translate(index, r) for index, r in enumerate(received)]
        errors = [t for t in translated if isinstance(t, ItemError)]
        if errors:
            return Answer(400, rejection(errors, len(received)))
        accepted = [t for t in translated if isinstance(t, Accepted)]
        outgoing = [Outgoing(a.type.topic, a.event, a.headers) for a in accepted]
        unacknowledged = await self._publish(client, outgoing)
        if unacknowledged:
            return self._unacknowledged(unacknowledged, len(outgoing))
        for a in accepted:
            GATEWAY_EVENTS.labels(topic=a.type.topic.name).inc()
        return Answer(
            202,
            {
                "accepted": len(accepted),
                "ids": [receipt_id(a.event) for a in accepted],
                "topics": [a.type.topic.name for a in accepted],
            },
        )

    def _unacknowledged(self, unacknowledged: int, total: int) -> Answer:
        return _error(
            503,
            f"the broker did not acknowledge {unacknowledged} of {total} event(s); "
            "retry the same request (events already stored are deduplicated by id "
            "downstream)",
            **{"Retry-After": "1"},
        )

    async def _accept(
        self, client: Client, topic_name: str, body: bytes, content_type: str
    ) -> Answer:
        try:
            items = parse_items(
                body, content_type, self.settings.max_body_bytes, self.settings.max_events
            )
        except BodyError as exc:
            if exc.status != 400:
                return _error(exc.status, exc.message)
            # A body that is not even JSON still costs the client a token.
            refused = await self._over_limit(client, 1)
            return refused or _error(400, exc.message)
        refused = await self._over_limit(client, len(items))
        if refused:
            return refused
        spec = topic(topic_name)
        events, errors = validate_items(items, spec.model)
        if errors:
            return Answer(400, rejection(errors, len(items)))
        unacknowledged = await self._publish(client, [Outgoing(spec, e) for e in events])
        if unacknowledged:
            return self._unacknowledged(unacknowledged, len(events))
        GATEWAY_EVENTS.labels(topic=topic_name).inc(len(events))
        return Answer(
            202,
            {"topic": topic_name, "accepted": len(events), "ids": [receipt_id(e) for e in events]},
        )

    async def _publish(self, client: Client, records: list[Outgoing]) -> int:
        """Batch every record, wait for the acknowledgements; return how many were not."""
        topics = ", ".join(sorted({r.spec.name for r in records}))
        try:
            futures = [await self.publisher.enqueue(r.event, r.spec, r.headers) for r in records]
        except KafkaError as exc:
            log.error("client %s: publishing to %s failed: %r", client.name, topics, exc)
            return len(records)
        # `wait`, not `wait_for(gather)`: a timeout must not cancel the producer's futures.
        done, pending = await asyncio.wait(futures, timeout=self.settings.ack_timeout_s)
        failed = [f.exception() for f in done if f.exception() is not None]
        if failed or pending:
            log.error(
                "client %s: %d of %d event(s) to %s not acknowledged (%d timed out): %r",
                client.name,
                len(failed) + len(pending),
                len(records),
                topics,
                len(pending),
                failed[:1],
            )
        return len(failed) + len(pending)

    async def _over_limit(self, client: Client, cost: int) -> Answer | None:
        try:
            decision = await self.bucket.take(client.name, cost)
        except RedisError as exc:
            log.error("rate limiter unavailable: %r", exc)
            return _error(
                503, "the rate limiter is unavailable; retry shortly", **{"Retry-After": "1"}
            )
        if decision.allowed:
            return None
        answer = _error(
            429,
            f"client {client.name!r} is over its rate of {self.settings.rate:g} events/s "
            f"(burst {self.settings.burst:,}); this request of {cost:,} event(s) fits in "
            f"{decision.wait_ms} ms",
            **{"Retry-After": str(decision.retry_after_s)},
        )
        answer.body["retry_after_ms"] = decision.wait_ms
        return answer


GATEWAY = web.AppKey("gateway", Gateway)


def _json(answer: Answer) -> web.Response:
    return web.Response(
        body=orjson.dumps(answer.body),
        status=answer.status,
        headers=answer.headers,
        content_type="application/json",
    )


def _serving(request: web.Request, route: str) -> AbstractContextManager[Span]:
    """The request's server span; the records it publishes carry its trace context."""
    return tracing.serving(
        f"{request.method} {route}",
        request.headers,
        {"http.request.method": request.method, "http.route": route, "url.path": request.path},
    )


async def _ingest(request: web.Request) -> web.Response:
    topic_name = request.match_info["topic"]
    label = topic_name if topic_name in PUBLISHABLE else "unknown"
    started = time.perf_counter()
    with _serving(request, "/v1/events/{topic}") as span:
        answer = await request.app[GATEWAY].ingest(request, topic_name)
        tracing.answered(span, answer.status)
    GATEWAY_REQUESTS.labels(topic=label, status=str(answer.status)).inc()
    GATEWAY_SECONDS.labels(topic=label).observe(time.perf_counter() - started)
    return _json(answer)


async def _ingest_cloudevents(request: web.Request) -> web.Response:
    started = time.perf_counter()
    with _serving(request, "/v1/cloudevents") as span:
        answer = await request.app[GATEWAY].ingest_cloudevents(request)
        tracing.answered(span, answer.status)
    GATEWAY_REQUESTS.labels(topic=CLOUDEVENTS_LABEL, status=str(answer.status)).inc()
    GATEWAY_SECONDS.labels(topic=CLOUDEVENTS_LABEL).observe(time.perf_counter() - started)
    return _json(answer)


_FAMILY_OF = {model: family for family, model in FAMILIES.items()}
_SCHEMA_FILES = {
    spec.name: SCHEMA_DIR / file_name(_FAMILY_OF[spec.model], spec.model) for spec in TOPICS
}


async def _schema(request: web.Request) -> web.StreamResponse:
    name = request.match_info["topic"]
    path = _SCHEMA_FILES.get(name)
    if path is None:
        known = ", ".join(sorted(_SCHEMA_FILES))
        return _json(_error(404, f"no topic {name!r}, so no schema; the topics are: {known}"))
    return web.Response(body=path.read_bytes(), content_type="application/schema+json")


async def _health(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY]
    try:
        await asyncio.wait_for(gateway.redis.ping(), 2)
    except (RedisError, TimeoutError, OSError) as exc:
        return _json(_error(503, f"redis: {type(exc).__name__}: {exc}"))
    return _json(Answer(200, {"status": "healthy"}))


async def _metrics(request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(), content_type=CONTENT_TYPE_LATEST.split(";")[0])


class AccessLogger(AbstractAccessLogger):
    """Method, path, status, client name and time: never headers, so never a token."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        self.logger.info(
            "%s %s %s client=%s %.1f ms",
            request.method,
            request.path,
            response.status,
            request.get(CLIENT_KEY, "-"),
            time * 1000,
        )

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)


def create_app(settings: GatewaySettings, resolved: ResolvedSettings) -> web.Application:
    """The gateway as an aiohttp application; its publisher and Redis client open on startup
    and close on cleanup."""
    app = web.Application(client_max_size=settings.max_body_bytes)

    async def resources(app: web.Application) -> AsyncIterator[None]:
        redis = aioredis.from_url(
            resolved.redis_url,
            **resolved.base.security.redis.redis_kwargs(resolved.redis_url),
        )
        publisher = publisher_for(resolved)
        try:
            await publisher.start()
            app[GATEWAY] = Gateway(settings, publisher, redis)
            freeze_long_lived()  # as a worker does: no full collection walks what lives on
            yield
        finally:
            await publisher.stop()
            await redis.aclose()

    app.cleanup_ctx.append(resources)
    openai_api.register(
        app, settings, resolved, lambda a: (a[GATEWAY].publisher, a[GATEWAY].redis), CLIENT_KEY
    )
    app.router.add_post("/v1/events/{topic}", _ingest)
    app.router.add_post("/v1/cloudevents", _ingest_cloudevents)
    app.router.add_get("/v1/schemas/{topic}", _schema)
    app.router.add_get("/health", _health)
    app.router.add_get("/metrics", _metrics)
    return app


class RunningGateway:
    """The gateway served on a loopback or configured port until the block ends; what tests and
    the demo use. `url` is its base address."""

    def __init__(self, settings: GatewaySettings, resolved: ResolvedSettings) -> None:
        self.runner = web.AppRunner(
            create_app(settings, resolved), access_log_class=AccessLogger, access_log=log
        )
        self.host = settings.host
        self.port = settings.port
        self.url = ""

    async def __aenter__(self) -> RunningGateway:
        await self.runner.setup()
        try:
            site = web.TCPSite(self.runner, self.host, self.port)
            await site.start()
        except BaseException:
            await self.runner.cleanup()
            raise
        port = self.runner.addresses[0][1]
        self.url = f"http://{self.host}:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.cleanup()
