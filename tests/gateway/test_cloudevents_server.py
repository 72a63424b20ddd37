"""`POST /v1/cloudevents` over real HTTP, publishing to the real broker, with the CloudEvents SDK
as the client: each mode lands on its type's topic with the Kafka binding's headers, a record
reads back as the same event, a retried source + id is counted once in the usage ledger, and a
request with bad data publishes nothing."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from cloudevents.core.bindings import http, kafka
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from agents.usage.flow import USAGE
from devkit.harness import Record, WorkerProcess, read_until
from runtime.settings import Settings
from schemas import decode, encode
from schemas.events import AIRequest, UsageEvent, WorldEvent
from schemas.examples import example
from scribe.gateway.access import TokenBook
from scribe.gateway.cloud_events import BATCH, event_id_of
from scribe.gateway.config import GatewaySettings
from scribe.gateway.server import RunningGateway
from tests.integration.usage_pipeline import wait_committed_past

pytestmark = pytest.mark.integration

ALL = f"ce-all-{uuid.uuid4().hex}"  # may publish every topic
USAGE_ONLY = f"ce-usage-{uuid.uuid4().hex}"  # may publish usage.events only
CE_HEADERS = {"ce_id", "ce_source", "ce_type", "ce_time", "ce_specversion", "content-type"}


@pytest.fixture
async def gateway(services: dict[str, str]) -> AsyncIterator[httpx.AsyncClient]:
    suffix = uuid.uuid4().hex[:8]  # each gateway its own Redis buckets
    tokens = TokenBook.parse(f"all{suffix}:{ALL}:*, usage{suffix}:{USAGE_ONLY}:usage.events")
    resolved = Settings(
        kafka_url=services["SCRIBE_KAFKA_URL"],
        database_url=services["SCRIBE_DATABASE_URL"],
        redis_url=services["SCRIBE_REDIS_URL"],
    ).require()
    settings = GatewaySettings(tokens, port=0, rate=1_000_000, burst=1_000_000)
    async with (
        RunningGateway(settings, resolved) as running,
        httpx.AsyncClient(base_url=running.url, timeout=60) as client,
    ):
        yield client


def _data(model: type[Any], **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads(encode(example(model, **overrides)))
    return data


def _usage(
    user: str,
    id_: str,
    source: str = "/billing/eu",
    extra: dict[str, Any] | None = None,
    **data: Any,
) -> CloudEvent:
    """A usage CloudEvent; `extra` attributes beside the required ones, `data` fields."""
    return CloudEvent(
        {"type": "com.scribe.usage.v1", "source": source, "id": id_, **(extra or {})},
        _data(UsageEvent, user_id=user, **data),
    )


def _batch(*events: CloudEvent) -> http.HTTPMessage:
    """SDK 2.2.0 has no batch writer: a batch is the JSON array of the events' structured
    bodies, sent as application/cloudevents-batch+json."""
    body = b"[" + b",".join(http.to_structured_event(e).body for e in events) + b"]"
    return http.HTTPMessage({"content-type": BATCH}, body)


async def _post(
    client: httpx.AsyncClient, message: http.HTTPMessage, token: str = ALL
) -> httpx.Response:
    headers = message.headers | {"Authorization": f"Bearer {token}"}
    return await client.post("/v1/cloudevents", content=message.body, headers=headers)


async def _records(kafka_url: str, topic: str, key: str, count: int) -> list[Record]:
    return await read_until(
        kafka_url, topic, lambda kept: len(kept) >= count, lambda r: r.key == key.encode()
    )


def _read_back(record: Record) -> Any:
    """The record as a CloudEvents consumer reads it: the SDK's Kafka binding, binary mode."""
    message = kafka.KafkaMessage(record.headers, record.key, record.value or b"")
    return kafka.from_binary(message, JSONFormat())


async def test_every_mode_lands_on_its_topic_as_the_same_cloudevent(
    gateway: httpx.AsyncClient, kafka_url: str
) -> None:
    user, world = f"ce-{uuid.uuid4().hex[:8]}", f"ce-{uuid.uuid4().hex[:8]}"
    asker = f"ce-ai-{uuid.uuid4().hex[:8]}"
    structured = _usage(user, "s-1", extra={"subject": "invoice-7"})
    binary = _usage(user, "x-1")
    batch = [
        _usage(user, "b-1"),
        CloudEvent(
            {"type": "com.scribe.world.event.v1", "source": "/game/eu", "id": "b-2"},
            _data(WorldEvent, world_id=world),
        ),
        # Another user: the router answers this request and writes a usage event of its own
        # (no CloudEvents headers), which must not be read as one of the three sent here.
        CloudEvent(
            {"type": "com.scribe.ai.request.v1", "source": "/web", "id": "b-3"},
            _data(AIRequest, user_id=asker),
        ),
    ]
    answers = [
        await _post(gateway, http.to_structured_event(structured)),
        await _post(gateway, _batch(*batch)),
        await _post(gateway, http.to_binary_event(binary)),
    ]
    assert [a.status_code for a in answers] == [202, 202, 202], [a.text for a in answers]
    assert answers[1].json() == {
        "accepted": 3,
        "ids": [event_id_of(e.get_source(), e.get_id()) for e in batch],
        "topics": ["usage.events", "world.events", "ai.requests"],
    }

    usage = await _records(kafka_url, "usage.events", user, 3)
    world_events = await _records(kafka_url, "world.events", world, 1)
    requests = await _records(kafka_url, "ai.requests", asker, 1)
    for record in usage + world_events + requests:
        assert set(record.headers) >= CE_HEADERS, record.headers
        assert record.headers["content-type"] == b"application/json"
    assert sorted(r.headers["ce_id"] for r in usage) == [b"b-1", b"s-1", b"x-1"]
    assert [r.headers["ce_type"] for r in world_events] == [b"com.scribe.world.event.v1"]
    assert [r.headers["ce_type"] for r in requests] == [b"com.scribe.ai.request.v1"]
    assert decode(requests[0].value or b"", AIRequest).request_id == event_id_of("/web", "b-3")

    sent = {e.get_id(): e for e in (structured, binary, batch[0])}
    for record in usage:
        read = _read_back(record)
        original = sent[read.get_id()]
        for name in ("id", "source", "type", "specversion", "time", "subject"):
            assert read.get_attributes().get(name) == original.get_attributes().get(name), name
        identity = event_id_of(original.get_source(), original.get_id())
        assert UsageEvent.model_validate(read.get_data()) == UsageEvent.model_validate(
            original.get_data() | {"event_id": identity}  # type: ignore[operator]
        )


async def test_the_same_source_and_id_twice_is_counted_once_in_the_usage_ledger(
    gateway: httpx.AsyncClient, kafka_url: str, worker: WorkerProcess, db: asyncpg.Connection
) -> None:
    user = f"ce-{uuid.uuid4().hex[:8]}"
    first = _usage(user, "dup-1", input_tokens=100)
    # A retry of the same CloudEvent, whose data a careless producer rebuilt with a new
    # event_id: source + id is the identity, so it is still the same usage.
    retry = CloudEvent(dict(first.get_attributes()), _data(UsageEvent, user_id=user))
    other_source = _usage(user, "dup-1", source="/billing/us", input_tokens=5)
    answers = [
        await _post(gateway, http.to_structured_event(first)),
        await _post(gateway, http.to_binary_event(retry)),
        await _post(gateway, http.to_structured_event(other_source)),
    ]
    assert [a.status_code for a in answers] == [202, 202, 202], [a.text for a in answers]
    ids = [a.json()["ids"][0] for a in answers]
    assert ids[0] == ids[1] != ids[2]

    records = await _records(kafka_url, "usage.events", user, 3)
    assert len(records) == 3
    last: dict[int, int] = {}
    for record in records:
        last[record.partition] = max(last.get(record.partition, -1), record.offset)
    # Offsets are committed after the ledger stored what they cover.
    group = USAGE.group_of(worker.app_id)
    await wait_committed_past(kafka_url, group, last, timeout=60, log=worker.log_tail)

    rows = await db.fetch(
        "SELECT event_id, input_tokens FROM usage_events WHERE user_id = $1 ORDER BY event_id",
        user,
    )
    assert sorted((r["event_id"], r["input_tokens"]) for r in rows) == sorted(
        [(ids[0], 100), (ids[2], 5)]
    )


async def test_bad_data_is_refused_per_item_and_nothing_is_published(
    gateway: httpx.AsyncClient, kafka_url: str
) -> None:
    user = f"ce-{uuid.uuid4().hex[:8]}"  # one key: one partition, so order is kept
    good, bad = _usage(user, "ok-1"), _usage(user, "bad-1")
    bad_data = dict(bad.get_data()) | {"input_tokens": -1}  # type: ignore[arg-type]
    bad = CloudEvent(dict(bad.get_attributes()), bad_data)
    world = CloudEvent(
        {"type": "com.scribe.world.event.v1", "source": "/game", "id": "w-1"},
        _data(WorldEvent, world_id=user),
    )

    batch = await _post(gateway, _batch(good, bad))
    binary = await _post(gateway, http.to_binary_event(bad))
    not_allowed = await _post(gateway, _batch(good, world), token=USAGE_ONLY)
    sentinel = await _post(gateway, http.to_structured_event(_usage(user, "sentinel")))

    assert batch.status_code == 400
    assert batch.json() == {
        "error": "1 of 2 event(s) invalid; nothing was published",
        "errors": [
            {
                "index": 1,
                "errors": ["data.input_tokens: Input should be greater than or equal to 0"],
            }
        ],
    }
    assert binary.status_code == 400
    assert binary.json()["errors"] == [
        {"index": 0, "errors": ["data.input_tokens: Input should be greater than or equal to 0"]}
    ]
    assert not_allowed.status_code == 403
    assert "may not publish to world.events" in not_allowed.json()["error"]
    assert sentinel.status_code == 202, sentinel.text
    # The sentinel was published after every refused request, to the same partition: had any of
    # them published anything, it would have been read first.
    stored = await _records(kafka_url, "usage.events", user, 1)
    assert [r.headers["ce_id"] for r in stored] == [b"sentinel"]
    world_events = await read_until(
        kafka_url, "world.events", lambda _: False, lambda r: r.key == user.encode(), timeout=3
    )
    assert world_events == []
