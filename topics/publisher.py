"""Publish events: validated, keyed by their family's key, serialized with orjson, acknowledged
by the broker (`acks=all`) before `publish` returns."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Any

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner

from schemas import encode
from schemas.events import Event
from topics.catalog import TopicSpec, topic_for


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

    async def publish_burst(
        self, events: Sequence[Event], spec: TopicSpec
    ) -> dict[TopicPartition, int]:
        """Send all at once, as few produce batches per partition as fit, keyed as `publish`
        keys them, so a burst reaches the broker together. Returns each partition's last
        offset."""
        partitions = sorted(await self._producer.partitions_for(spec.name))
        partitioner = DefaultPartitioner()
        batches: dict[int, list[Any]] = {}  # aiokafka BatchBuilders
        for event in events:
            key, value = spec.key_of(event), encode(event)
            partition = partitioner(key, partitions, partitions)
            if partition not in batches:
                batches[partition] = [self._producer.create_batch()]
            open_batches = batches[partition]
            if open_batches[-1].append(key=key, value=value, timestamp=None) is None:
                open_batches.append(self._producer.create_batch())
                if open_batches[-1].append(key=key, value=value, timestamp=None) is None:
                    raise ValueError(f"an event of {len(value)} bytes does not fit in a batch")
        sent = [
            (
                partition,
                batch,
                await self._producer.send_batch(batch, spec.name, partition=partition),
            )
            for partition, group in batches.items()
            for batch in group
        ]
        last: dict[TopicPartition, int] = {}
        for partition, batch, future in sent:
            tp = TopicPartition(spec.name, partition)
            base = (await future).offset
            last[tp] = max(last.get(tp, -1), base + batch.record_count() - 1)
        return last
