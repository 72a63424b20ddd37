"""world.events + world.ticks -> the worlds this worker owns (`WorldOwner`) -> PostgreSQL
(world_events, world_state, memories) -> cache.invalidations. Its key is (world, version):
the owner skips inputs its log already holds, so a re-read batch changes nothing.

Ownership is by partition: both topics are keyed by world_id with the same partition count,
and the range assignor gives partition p of both to one member. A revoked partition's worlds
are written before another member may take it; the tick timer's writes share the owner's
group commit; an offset is committed only after everything read before it is stored.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.producer.message_accumulator import BatchBuilder

from agents.context import Resources
from agents.intake import dead_letter_writer, decoder
from agents.world.invalidation import WorldInvalidation, one_per_partition
from agents.world.owner import EVENTS_AGENT, TICKS_AGENT, WorldOwner
from runtime import tracing
from runtime.flow import Flow, Rebalance, Timer
from runtime.metrics import MESSAGES_OUT, PROCESSING_SECONDS
from runtime.partitioner import partition_of
from runtime.sink import Sink
from runtime.source import DeadLetterWriter, Received
from runtime.spec import Assignor, ConsumerSpec
from runtime.tracing import Header
from schemas import encode
from schemas.events import Event, WorldEvent, WorldTick
from sinks.postgres.databases import keep_session
from sinks.postgres.world import RETRYABLE, WorldStore
from sinks.retry import KEEP_TRYING, until_written
from topics.catalog import CACHE_INVALIDATIONS, WORLD_EVENTS, WORLD_TICKS

WORLD = ConsumerSpec(
    "world",
    (WORLD_EVENTS.name, WORLD_TICKS.name),
    max_batch=1000,
    assignor=Assignor.RANGE,
    agent_labels={WORLD_EVENTS.name: EVENTS_AGENT, WORLD_TICKS.name: TICKS_AGENT},
)


@dataclass(frozen=True)
class WorldInputs:
    events: list[Received[WorldEvent]]
    ticks: list[Received[WorldTick]]


def split(batch: list[Received[Event]]) -> WorldInputs:
    events = [r for r in batch if isinstance(r.event, WorldEvent)]
    ticks = [r for r in batch if isinstance(r.event, WorldTick)]
    return WorldInputs(events, ticks)  # type: ignore[arg-type]  # narrowed by the isinstance


class WorldSink:
    """Applies a batch to the owned worlds and stores it (the owner's flush); the owner keeps
    a world's changes in memory only until its next flush."""

    def __init__(self, owner: WorldOwner, pool: asyncpg.Pool, fallback_partitions: int) -> None:
        self.owner = owner
        self.pool = pool
        self.fallback_partitions = fallback_partitions

    async def write(self, batch: WorldInputs) -> None:
        if batch.events:
            with PROCESSING_SECONDS.labels(agent=EVENTS_AGENT).time():
                await self.owner.apply_events(batch.events)
        if batch.ticks:
            with PROCESSING_SECONDS.labels(agent=TICKS_AGENT).time():
                await self.owner.apply_ticks(batch.ticks)

    async def close(self) -> None:
        await self.pool.close()

    # The runtime's rebalance hooks: the owner's worlds follow world.events' partitions.

    def assigned(self, partitions: frozenset[TopicPartition], counts: Mapping[str, int]) -> None:
        count = counts.get(WORLD_EVENTS.name, self.fallback_partitions)
        self.owner.assigned(_world_partitions(partitions), count)

    async def revoked(self, partitions: frozenset[TopicPartition]) -> None:
        lost = _world_partitions(partitions)
        if lost:
            await self.owner.revoked(lost)


def _world_partitions(partitions: frozenset[TopicPartition]) -> set[int]:
    return {tp.partition for tp in partitions if tp.topic == WORLD_EVENTS.name}


def declare(
    sink: Sink[WorldInputs],
    dead_letter: DeadLetterWriter,
    rebalance: Rebalance | None = None,
    timers: Sequence[Timer] = (),
) -> Flow[Event, WorldInputs]:
    return Flow(
        spec=WORLD,
        decode=decoder(Event, WORLD_EVENTS, WORLD_TICKS),
        dead_letter=dead_letter,
        handle=split,
        sinks=[sink],
        retryable=(KafkaError, *RETRYABLE),
        timers=timers,
        rebalance=rebalance,
    )


async def send_invalidations(
    producer: AIOKafkaProducer, invalidations: list[WorldInvalidation], headers: list[Header]
) -> int:
    """Send a round's invalidations merged into one message per partition (`one_per_partition`)
    and one produce batch per partition (one future each, not one per world), keyed and
    partitioned as `producer.send` would, and wait for the acknowledgements. Returns how many
    messages were sent."""
    topic = CACHE_INVALIDATIONS.name
    partitions = len(await producer.partitions_for(topic))
    # Keyed by `id`, as the message it joins is (`CACHE_INVALIDATIONS.key_of`).
    merged = one_per_partition(invalidations, lambda i: partition_of(i.id.encode(), partitions))
    batches: dict[int, list[BatchBuilder]] = {}
    for partition, invalidation in merged:
        key, value = CACHE_INVALIDATIONS.key_of(invalidation), encode(invalidation)
        open_batches = batches.get(partition)
        if open_batches is None:
            open_batches = batches[partition] = [producer.create_batch()]
        if open_batches[-1].append(key=key, value=value, timestamp=None, headers=headers):
            continue
        open_batches.append(producer.create_batch())
        if not open_batches[-1].append(key=key, value=value, timestamp=None, headers=headers):
            raise ValueError(f"an invalidation of {len(value)} bytes fits in no produce batch")
    sent = [
        await producer.send_batch(batch, topic, partition=partition)
        for partition, group in batches.items()
        for batch in group
    ]
    for future in sent:
        await future
    return len(merged)


async def build(resources: Resources) -> Flow[Event, WorldInputs]:
    settings = resources.settings
    base = settings.base

    async def publish(invalidations: list[WorldInvalidation]) -> None:
        # The aiokafka producer Faust runs (Faust's `send` takes one message at a time).
        faust_producer: Any = resources.app.producer
        producer: AIOKafkaProducer = faust_producer._ensure_producer()

        async def send_all() -> int:
            # The batch's span (or tick round's, none) goes on: the invalidation batch links to it.
            return await send_invalidations(producer, invalidations, tracing.inject())

        # The worlds are stored by now: invalidations not sent here would never be sent, so a
        # stop does not cut this short (the runner's stop deadline does, if Kafka is down).
        sent = await until_written(
            "kafka.cache_invalidations",
            send_all,
            retryable=(KafkaError, OSError),
            stopping=KEEP_TRYING,
        )
        MESSAGES_OUT.labels(topic=CACHE_INVALIDATIONS.name, agent="world").inc(sent)

    pool = await asyncpg.create_pool(
        settings.database_url,
        min_size=1,
        max_size=4,
        reset=keep_session,
        **settings.database_options,
    )
    owner = WorldOwner(
        WorldStore(pool),
        publish,
        resources.dead_letters,
        tick_seconds=base.world_tick_seconds,
        idle_seconds=base.world_idle_seconds,
        catch_up=base.world_catch_up_ticks,
        checkpoint_seconds=base.world_checkpoint_seconds,
    )
    sink = WorldSink(owner, pool, base.topic_partitions)
    # Ticks are re-derived from the stored schedule: a failed round is logged and the next
    # one goes on (the owner already dropped the worlds it could not write).
    timers = (
        [Timer("tick", min(0.1, base.world_tick_seconds / 2), owner.tick_due)]
        if base.world_tick_seconds > 0
        else []
    )
    return declare(sink, dead_letter_writer(resources.dead_letters, WORLD), sink, timers)
