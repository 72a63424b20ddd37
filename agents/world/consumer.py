"""world.events + world.ticks -> the world owner: a plain aiokafka batch consumer run as a
service of the Faust worker, in its own group `<app id>-world` (see `agents/batch_consumer.py`).

Why not Faust agents: with them, a worker SIGKILLed mid-stream and restarted lost events in
about half of the full-suite runs: the group's offsets were committed past the events published
while it was down (~52 per partition), which were never applied. The restarted Faust consumer
had not read them, and its gap handling (a forward jump in offsets is taken for compaction) acked
the hole; which start-up path moved its position was not found. Here an offset is committed
only after the owner stored everything read before it in PostgreSQL, and a revoked partition's
worlds are written before another worker may take it.

Ownership is by partition: both topics are keyed by world_id with the same partition count,
and the range assignor gives partition p of both topics to the same member.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias

from aiokafka import ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import KafkaError

from agents.batch_consumer import BatchConsumerService
from agents.context import Resources
from agents.intake import decoded
from agents.world.owner import EVENTS_AGENT, TICKS_AGENT, WorldOwner
from runtime import kafka
from runtime.metrics import PROCESSING_SECONDS
from schemas.events import WorldEvent, WorldTick
from sinks.postgres.world import RETRYABLE
from topics.catalog import WORLD_EVENTS, WORLD_TICKS
from topics.dlq import Origin

log = logging.getLogger(__name__)

Message: TypeAlias = ConsumerRecord[bytes, bytes]
Records: TypeAlias = dict[TopicPartition, list[Message]]

MAX_BATCH = 1000
POLL_TIMEOUT_MS = 500
FIRST_PAUSE_S = 0.5
MAX_PAUSE_S = 10.0


def world_group_id(app_id: str) -> str:
    return f"{app_id}-world"


def _origins(messages: list[Message]) -> list[Origin]:
    return [Origin(m.topic, m.partition, m.offset, m.key, m.value) for m in messages]


class _Ownership(ConsumerRebalanceListener):  # type: ignore[misc]
    """Tells the owner which worlds are its own. A revocation waits for the batch being
    applied, so the owner writes and forgets the lost worlds between batches."""

    def __init__(self, service: WorldBatchConsumer) -> None:
        self.service = service

    async def on_partitions_revoked(self, revoked: Any) -> None:
        service = self.service
        async with service.applying:
            service.owned -= set(revoked)
            partitions = {tp.partition for tp in revoked if tp.topic == WORLD_EVENTS.name}
            if partitions:
                await service.owner.revoked(partitions)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        service = self.service
        if service.should_stop:
            return  # a join finishing while the worker leaves: it will own nothing
        service.owned = set(assigned)
        partitions = {tp.partition for tp in assigned if tp.topic == WORLD_EVENTS.name}
        count = service.consumer.partitions_for_topic(WORLD_EVENTS.name)
        fallback = service.resources.settings.base.topic_partitions
        service.owner.assigned(partitions, len(count) if count else fallback)


class WorldBatchConsumer(BatchConsumerService):
    flow = "world"

    def __init__(
        self,
        resources: Resources,
        world_owner: Callable[[], Awaitable[WorldOwner]],
        **kwargs: Any,
    ) -> None:
        super().__init__(resources, **kwargs)
        self.world_owner = world_owner
        self.applying = asyncio.Lock()  # held while a batch is applied and committed
        # What the listener last gave this worker (`assignment()` still lists revoked
        # partitions until the next assignment arrives).
        self.owned: set[TopicPartition] = set()
        self._owner: WorldOwner | None = None

    @property
    def owner(self) -> WorldOwner:
        assert self._owner is not None, "used before on_start"
        return self._owner

    async def on_start(self) -> None:
        settings = self.resources.settings
        group_id = world_group_id(settings.base.app_id)
        self._owner = await self.world_owner()
        consumer = kafka.consumer(
            settings, group_id, partition_assignment_strategy=(RangePartitionAssignor,)
        )
        topics = [WORLD_EVENTS.name, WORLD_TICKS.name]
        consumer.subscribe(topics, listener=_Ownership(self))
        await self.start_consumer(consumer, group_id, topics)

    async def on_stop(self) -> None:
        await self.finish_consuming()
        try:
            # Leaving the group does not call the listener: checkpoint and write the worlds
            # here, so the next owner loads them from a fresh checkpoint.
            async with self.applying:
                owned = {tp.partition for tp in self.owned if tp.topic == WORLD_EVENTS.name}
                self.owned = set()
                if owned and self._owner is not None:
                    await self.owner.revoked(owned)
        finally:
            await self.close_consumer()

    async def consume(self) -> None:
        pause = FIRST_PAUSE_S
        while not self.should_stop:
            try:
                records = await self.consumer.getmany(
                    timeout_ms=POLL_TIMEOUT_MS, max_records=MAX_BATCH
                )
            except KafkaError as error:
                log.warning("world: fetch failed (%r); retry in %.1f s", error, pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, MAX_PAUSE_S)
                continue
            pause = FIRST_PAUSE_S
            if records:
                await self._apply_until_done(records)

    async def _apply_until_done(self, records: Records) -> None:
        """Apply a batch, retrying after a pause when Kafka or PostgreSQL fails under it: the
        owner ignores the events it already stored, and ticks it already took, so a retry
        changes only what the failed attempt did not store. Stopping abandons the batch
        uncommitted: the partitions' next owner reads it again."""
        pause = FIRST_PAUSE_S
        while not self.should_stop:
            async with self.applying:
                # A partition revoked meanwhile is its next owner's to apply.
                records = {tp: batch for tp, batch in records.items() if tp in self.owned}
                if not records:
                    return
                try:
                    await self._apply(records)
                    await self.commit({tp: batch[-1].offset + 1 for tp, batch in records.items()})
                    return
                except (KafkaError, *RETRYABLE) as error:
                    log.warning("world: batch failed (%r); retry in %.1f s", error, pause)
            await asyncio.sleep(pause)
            pause = min(pause * 2, MAX_PAUSE_S)

    async def _apply(self, records: Records) -> None:
        dead_letters = self.resources.dead_letters
        events = [
            m for tp, batch in records.items() if tp.topic == WORLD_EVENTS.name for m in batch
        ]
        ticks = [m for tp, batch in records.items() if tp.topic == WORLD_TICKS.name for m in batch]
        if events:
            with PROCESSING_SECONDS.labels(agent=EVENTS_AGENT).time():
                valid_events = await decoded(
                    _origins(events), WORLD_EVENTS, WorldEvent, dead_letters, EVENTS_AGENT
                )
                if valid_events:
                    await self.owner.apply_events(valid_events)
        if ticks:
            with PROCESSING_SECONDS.labels(agent=TICKS_AGENT).time():
                valid_ticks = await decoded(
                    _origins(ticks), WORLD_TICKS, WorldTick, dead_letters, TICKS_AGENT
                )
                if valid_ticks:
                    await self.owner.apply_ticks(valid_ticks)
