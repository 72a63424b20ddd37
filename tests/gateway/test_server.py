"""The gateway over real HTTP, publishing to the real broker, limiting rates in real Redis."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace

import httpx
import orjson
import pytest

from devkit.harness import Record, read_until
from devkit.stack.processes import free_port
from runtime.settings import ResolvedSettings, Settings
from schemas import DecodeError, decode, encode
from schemas.events import AIRequest, CacheInvalidation, Event, UsageEvent, WorldEvent, WorldTick
from schemas.examples import example
from schemas.world import PAYLOADS
from scribe.gateway.access import TokenBook
from scribe.gateway.config import GatewaySettings
from scribe.gateway.ingest import receipt_id
from scribe.gateway.server import RunningGateway
from topics.catalog import topic

pytestmark = pytest.mark.integration

GAME = f"game-{uuid.uuid4().hex}"  # may publish usage.events and world.ticks
WEB = f"web-{uuid.uuid4().hex}"  # may publish everything


def _book(suffix: str) -> TokenBook:
    """Client names carry a suffix so each gateway here has its own Redis buckets."""
    return TokenBook.parse(
        f"game{suffix}:{GAME}:usage.events|world.ticks, web{suffix}:{WEB}:*",
    )


def _resolved(services: dict[str, str], **overrides: str) -> ResolvedSettings:
    env = services | overrides
    return Settings(
        kafka_url=env["SCRIBE_KAFKA_URL"],
        database_url=env["SCRIBE_DATABASE_URL"],
        redis_url=env["SCRIBE_REDIS_URL"],
    ).require()


@asynccontextmanager
async def _gateway(
    settings: GatewaySettings, resolved: ResolvedSettings
) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        RunningGateway(replace(settings, port=0), resolved) as running,
        httpx.AsyncClient(base_url=running.url, timeout=60) as client,
    ):
        yield client


@pytest.fixture
async def roomy(services: dict[str, str]) -> AsyncIterator[httpx.AsyncClient]:
    """A gateway with generous limits."""
    settings = GatewaySettings(_book(uuid.uuid4().hex[:8]), rate=1_000_000, burst=1_000_000)
    async with _gateway(settings, _resolved(services)) as client:
        yield client


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _json(events: Sequence[Event]) -> bytes:
    return b"[" + b",".join(encode(e) for e in events) + b"]"


def _ndjson(events: Sequence[Event]) -> bytes:
    return b"\n".join(encode(e) for e in events) + b"\n"


async def _post(
    client: httpx.AsyncClient,
    topic_name: str,
    body: bytes,
    token: str | None = WEB,
    content_type: str = "application/json",
) -> httpx.Response:
    headers = {"Content-Type": content_type} | (_auth(token) if token else {})
    return await client.post(f"/v1/events/{topic_name}", content=body, headers=headers)


async def test_one_event_is_published_and_its_id_returned_once_stored(
    roomy: httpx.AsyncClient, kafka_url: str
) -> None:
    user = f"gw-{uuid.uuid4().hex[:8]}"
    event = example(UsageEvent, user_id=user)
    response = await _post(roomy, "usage.events", encode(event), token=GAME)
    assert response.status_code == 202, response.text
    assert response.json() == {"topic": "usage.events", "accepted": 1, "ids": [event.event_id]}
    records = await read_until(
        kafka_url, "usage.events", lambda kept: len(kept) >= 1, lambda r: r.key == user.encode()
    )
    assert [decode(r.value or b"", UsageEvent) for r in records] == [event]


async def test_refused_requests_never_reach_kafka_and_tokens_are_never_logged(
    roomy: httpx.AsyncClient, kafka_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    world = f"gw-{uuid.uuid4().hex[:8]}"  # one key: one partition, so order is kept
    ticks = [example(WorldTick, world_id=world, tick=t) for t in range(6)]
    valid, bad = orjson.loads(encode(ticks[3])), orjson.loads(encode(ticks[4])) | {"tick": -1}

    no_token = await _post(roomy, "world.ticks", encode(ticks[0]), token=None)
    wrong_token = await _post(roomy, "world.ticks", encode(ticks[1]), token=GAME + "x")
    not_allowed = await _post(
        roomy, "world.events", encode(example(WorldEvent, world_id=world)), token=GAME
    )
    invalid = await _post(roomy, "world.ticks", orjson.dumps([valid, bad]), token=GAME)
    sentinel = await _post(roomy, "world.ticks", encode(ticks[5]), token=GAME)

    assert no_token.status_code == 401 and wrong_token.status_code == 401
    assert no_token.headers["WWW-Authenticate"] == 'Bearer realm="scribe"'
    assert not_allowed.status_code == 403
    assert "may not publish to world.events" in not_allowed.json()["error"]
    assert invalid.status_code == 400
    assert invalid.json() == {
        "error": "1 of 2 event(s) invalid; nothing was published",
        "errors": [{"index": 1, "errors": ["tick: Input should be greater than or equal to 0"]}],
    }
    assert sentinel.status_code == 202
    stored = await read_until(
        kafka_url, "world.ticks", lambda kept: len(kept) >= 1, lambda r: r.key == world.encode()
    )
    # The sentinel was published after every refused request, on the same partition: had any
    # of them been published, it would have been read first.
    assert [decode(r.value or b"", WorldTick).tick for r in stored] == [5]
    world_events = await read_until(
        kafka_url, "world.events", lambda kept: False, lambda r: r.key == world.encode(), timeout=3
    )
    assert world_events == []
    assert GAME not in caplog.text and WEB not in caplog.text
    assert "client=game" in caplog.text  # the access log names the client instead


async def test_a_world_event_whose_payload_breaks_the_contract_is_refused_per_item(
    roomy: httpx.AsyncClient, kafka_url: str
) -> None:
    world = f"gw-{uuid.uuid4().hex[:8]}"
    good = example(WorldEvent, world_id=world, type="world_loaded")
    no_kind = orjson.loads(encode(example(WorldEvent, world_id=world, type="location_created")))
    del no_kind["payload"]["kind"]
    response = await _post(
        roomy, "world.events", orjson.dumps([orjson.loads(encode(good)), no_kind])
    )
    assert response.status_code == 400
    assert response.json()["errors"] == [{"index": 1, "errors": ["payload.kind: Field required"]}]
    stored = await read_until(
        kafka_url, "world.events", lambda kept: False, lambda r: r.key == world.encode(), timeout=3
    )
    assert stored == []


async def test_unknown_and_output_topics_are_not_found(roomy: httpx.AsyncClient) -> None:
    for name in ("usage.event", "ai.responses", "budget.alerts"):
        response = await _post(roomy, name, encode(example(UsageEvent)))
        assert response.status_code == 404
        assert "publish to one of ai.requests, cache.invalidations" in response.json()["error"]


async def test_content_type_must_be_json_or_ndjson(roomy: httpx.AsyncClient) -> None:
    response = await _post(
        roomy, "usage.events", encode(example(UsageEvent)), content_type="text/plain"
    )
    assert response.status_code == 415


async def test_the_contract_is_served(roomy: httpx.AsyncClient) -> None:
    response = await roomy.get("/v1/schemas/usage.events")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/schema+json"
    assert response.json()["title"] == "UsageEvent"
    world = (await roomy.get("/v1/schemas/world.events")).json()
    assert world["discriminator"]["propertyName"] == "type"
    assert set(world["discriminator"]["mapping"]) == set(PAYLOADS)
    unknown = await roomy.get("/v1/schemas/usage.event")
    assert unknown.status_code == 404
    assert "no topic 'usage.event'" in unknown.json()["error"]
    assert "usage.events" in unknown.json()["error"]
    assert (await roomy.get("/health")).json() == {"status": "healthy"}
    assert "scribe_gateway_requests_total" in (await roomy.get("/metrics")).text


async def test_limits_give_413_and_429_with_retry_after_across_gateway_processes(
    services: dict[str, str], kafka_url: str
) -> None:
    settings = GatewaySettings(
        _book(uuid.uuid4().hex[:8]), max_body_bytes=16 * 1024, max_events=10, rate=20, burst=10
    )
    resolved = _resolved(services)
    user = f"gw-{uuid.uuid4().hex[:8]}"
    events = [example(UsageEvent, user_id=user) for _ in range(12)]
    async with _gateway(settings, resolved) as first, _gateway(settings, resolved) as second:
        too_many = await _post(first, "usage.events", _json(events[:11]))
        assert too_many.status_code == 413
        assert "holds 11 events; the limit is 10" in too_many.json()["error"]
        padded = orjson.loads(encode(events[0])) | {"service": "x" * 20_000}
        too_big = await _post(first, "usage.events", orjson.dumps(padded))
        assert too_big.status_code == 413

        spent = await _post(
            first, "usage.events", _ndjson(events[:10]), content_type="application/x-ndjson"
        )
        assert spent.status_code == 202, spent.text
        # The second process shares the bucket the first one emptied.
        refused = await _post(second, "usage.events", _json(events[10:12]))
        assert refused.status_code == 429, refused.text
        assert refused.headers["Retry-After"] == "1"
        wait_ms = refused.json()["retry_after_ms"]
        assert 0 < wait_ms <= 100 + 50  # two events at 20/s, from a bucket refilled a little
        await asyncio.sleep(wait_ms / 1000 + 0.05)
        later = await _post(second, "usage.events", _json(events[10:12]))
        assert later.status_code == 202, later.text

    stored = await read_until(
        kafka_url, "usage.events", lambda kept: len(kept) >= 12, lambda r: r.key == user.encode()
    )
    ids = Counter(decode(r.value or b"", UsageEvent).event_id for r in stored)
    assert ids == Counter(e.event_id for e in events), "the 429 request published nothing"


async def test_without_redis_the_gateway_refuses_rather_than_runs_unlimited(
    services: dict[str, str],
) -> None:
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    settings = GatewaySettings(_book(uuid.uuid4().hex[:8]))
    async with _gateway(settings, _resolved(services, SCRIBE_REDIS_URL=dead_redis)) as client:
        response = await _post(client, "usage.events", encode(example(UsageEvent)))
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "1"
        assert (await client.get("/health")).status_code == 503


def _mixed_events(marker: str, count: int) -> dict[str, list[Event]]:
    """`count` events over every input topic, each keyed by an id that starts with `marker`."""
    makers: dict[str, Callable[[int], Event]] = {
        "ai.requests": lambda i: example(AIRequest, user_id=f"{marker}-u{i % 50}"),
        "usage.events": lambda i: example(UsageEvent, user_id=f"{marker}-u{i % 50}"),
        "world.events": lambda i: example(WorldEvent, world_id=f"{marker}-w{i % 10}"),
        "world.ticks": lambda i: example(WorldTick, world_id=f"{marker}-w{i % 10}", tick=i),
        "cache.invalidations": lambda i: example(CacheInvalidation, id=f"{marker}-i{i}"),
    }
    per_topic = count // len(makers)
    return {name: [make(i) for i in range(per_topic)] for name, make in makers.items()}


async def test_ten_thousand_events_posted_in_batches_arrive_exactly_once_each(
    roomy: httpx.AsyncClient, kafka_url: str
) -> None:
    marker = f"gw10k-{uuid.uuid4().hex[:8]}"
    by_topic = _mixed_events(marker, 10_000)
    assert sum(len(events) for events in by_topic.values()) == 10_000
    batches = [
        (name, events[start : start + 500])
        for name, events in by_topic.items()
        for start in range(0, len(events), 500)
    ]
    limit = asyncio.Semaphore(4)

    async def post(number: int, name: str, batch: list[Event]) -> list[str]:
        ndjson = number % 2 == 1
        body = _ndjson(batch) if ndjson else _json(batch)
        kind = "application/x-ndjson" if ndjson else "application/json"
        async with limit:
            response = await _post(roomy, name, body, content_type=kind)
        assert response.status_code == 202, response.text
        return list(response.json()["ids"])

    receipts = await asyncio.gather(*(post(n, name, b) for n, (name, b) in enumerate(batches)))
    assert sorted(i for ids in receipts for i in ids) == sorted(
        receipt_id(e) for events in by_topic.values() for e in events
    )

    for name, events in by_topic.items():
        posted = Counter(receipt_id(e) for e in events)
        counted = await _ids_stored(kafka_url, name, set(posted), len(events))
        assert counted == posted, name


async def _ids_stored(kafka_url: str, name: str, posted: set[str], expected: int) -> Counter[str]:
    """How many times each posted id was stored in topic `name`. Records the pipeline itself
    writes there (the router's usage events for the same users) are not the gateway's."""
    model = topic(name).model
    reached: list[float] = []

    def settled(kept: list[Record]) -> bool:
        """Read on for a second after the expected count, so duplicates would show."""
        if len(kept) >= expected and not reached:
            reached.append(time.monotonic())
        return bool(reached) and time.monotonic() - reached[0] > 1.0

    stored = await read_until(
        kafka_url,
        name,
        done=settled,
        match=lambda r: _posted_id(r, model) in posted,
        timeout=60,
    )
    return Counter(str(_posted_id(r, model)) for r in stored)


def _posted_id(record: Record, model: type[Event]) -> str | None:
    try:
        return receipt_id(decode(record.value or b"", model))
    except DecodeError:
        return None
