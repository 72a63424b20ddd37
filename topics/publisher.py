"""Publish events: validated, keyed by their family's key, serialized with orjson, acknowledged
by the broker (`acks=all`) before `publish` returns."""

from __future__ import annotations

from collections.abc import Iterable
from types import TracebackType

from aiokafka import AIOKafkaProducer

from schemas import encode
from schemas.events import Event
from topics.catalog import TopicSpec, topic_for

RawRecord = tuple[str, bytes | None, bytes | None]


class Publisher:
    def __init__(
        self, bootstrap_servers: list[str], idempotent: bool = False, linger_ms: int = 5
    ) -> None:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap_servers,
            acks="all",
            enable_idempotence=idempotent,
            linger_ms=linger_ms,
            max_batch_size=256 * 1024,
        )

    async def __aenter__(self) -> Publisher:
        await self._producer.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._producer.stop()

    async def publish(self, event: Event, spec: TopicSpec | None = None) -> None:
        spec = spec or topic_for(event)
        await self._producer.send_and_wait(spec.name, encode(event), key=spec.key_of(event))

    async def publish_many(self, events: Iterable[Event], spec: TopicSpec | None = None) -> int:
        """Send all, then wait for every acknowledgement; return the count."""
        futures = []
        for event in events:
            target = spec or topic_for(event)
            futures.append(
                await self._producer.send(target.name, encode(event), key=target.key_of(event))
            )
        for future in futures:
            await future
        return len(futures)

    async def publish_raw(self, records: Iterable[RawRecord]) -> int:
        """Send (topic, key, value) as given — a None value is a tombstone on a compacted
        topic — then wait for every acknowledgement; return the count."""
        futures = [
            await self._producer.send(topic, value, key=key) for topic, key, value in records
        ]
        for future in futures:
            await future
        return len(futures)
