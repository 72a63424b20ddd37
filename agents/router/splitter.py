"""The router's intake: ai.requests read in batches by a plain aiokafka consumer, validated
(bad input to ai.requests.dlq), and split by priority: urgent, high and normal go straight to
decide (`ai.requests.ready`); low and background to the held lane (`ai.requests.held`), which
releases them to decide under its rate cap and window. So a burst of background requests never
sits in front of an urgent one at the per-event decide stage (Faust's per-event machinery is
the slow part; a batch loop reads tens of thousands of messages a second).

Each batch's messages are published and acknowledged before the batch's offsets are committed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError
from mode import Service

from agents.router.decide import Emit
from agents.router.lane_consumer import DeadLetter, Publish
from agents.router.policy import LANE_OF_PRIORITY
from runtime.lag import ConsumerGroups
from runtime.metrics import MESSAGES_IN
from schemas import DecodeError, decode
from schemas.events import AIRequest, Lane
from topics.catalog import AI_REQUESTS, AI_REQUESTS_HELD, AI_REQUESTS_READY, TopicSpec
from topics.dlq import Origin

log = logging.getLogger(__name__)

POLL_MS = 20
MAX_BATCH = 2000


def destination(request: AIRequest) -> TopicSpec:
    held = LANE_OF_PRIORITY[request.priority] is Lane.DEFERRED
    return AI_REQUESTS_HELD if held else AI_REQUESTS_READY


class PrioritySplitter(Service):
    def __init__(
        self,
        new_consumer: Callable[[], AIOKafkaConsumer],
        *,
        group: str,
        groups: ConsumerGroups,
        publish: Publish,
        dead_letter: DeadLetter,
    ) -> None:
        super().__init__()
        self.new_consumer = new_consumer
        self.group = group
        self.groups = groups
        self.publish = publish
        self.dead_letter = dead_letter

    @Service.task
    async def _split(self) -> None:
        consumer = self.new_consumer()
        consumer.subscribe([AI_REQUESTS.name], listener=_Assignments())
        await consumer.start()
        self.groups.add(self.group, [AI_REQUESTS.name], consumer)
        log.info("router: intake splitting %s by priority", AI_REQUESTS.name)
        try:
            while not self.should_stop:
                batches = await consumer.getmany(timeout_ms=POLL_MS, max_records=MAX_BATCH)
                if not batches:
                    continue
                emits = []
                for partition, records in batches.items():
                    MESSAGES_IN.labels(topic=AI_REQUESTS.name, agent="router").inc(len(records))
                    for record in records:
                        origin = Origin(
                            partition.topic,
                            partition.partition,
                            record.offset,
                            record.key,
                            record.value,
                        )
                        try:
                            if record.value is None:
                                raise DecodeError("json", "empty message (no value)")
                            request = decode(record.value, AIRequest)
                        except DecodeError as error:
                            await self.dead_letter(origin, error.kind, error.reason)
                            continue
                        # Keyed by user_id whatever the producer used: decide's tables need it.
                        emits.append(
                            Emit(destination(request), request.user_id.encode(), record.value)
                        )
                if emits:
                    await self.publish(emits)
                try:
                    await consumer.commit()
                except (CommitFailedError, IllegalStateError) as error:
                    # A rebalance took partitions away: their new owner reads them again,
                    # and decide answers a request it has seen with its earlier response.
                    log.warning("router: intake commit skipped after a rebalance: %s", error)
        finally:
            self.groups.discard(self.group)
            await consumer.stop()


class _Assignments(ConsumerRebalanceListener):  # type: ignore[misc]
    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        return None

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        log.info(
            "router: intake lane assigned partitions %s", sorted(tp.partition for tp in assigned)
        )
