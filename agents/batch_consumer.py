"""What the flows that read with their own aiokafka consumer group share (usage, world): a
`mode.Service` of the Faust worker that owns the consumer, registers its group for the worker's
lag sampler, lets its consuming loop finish the batch in hand at shutdown, and commits offsets
that a rebalance may refuse.

Why their own group: Faust's partition assignor expects every member of its group to be a
Faust worker, and Faust acks a message when the agent asks for the next one; these flows
commit only after their sink stored a batch.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any, ClassVar, Self

import mode
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from agents.context import Resources

log = logging.getLogger(__name__)

STOP_GRACE_S = 15.0


class BatchConsumerService(mode.Service):
    flow: ClassVar[str]  # names the flow in log lines

    def __init__(self, resources: Resources, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.resources = resources
        self._consumer: AIOKafkaConsumer | None = None
        self._group: str | None = None
        self._consuming: asyncio.Future[None] | None = None

    @classmethod
    def bound_to(cls, *args: Any) -> type[Self]:
        """A subclass Faust can instantiate with its own arguments (`app.service`)."""

        class Bound(cls):  # type: ignore[valid-type,misc]
            def __init__(self, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)

        Bound.__name__ = cls.__name__
        return Bound

    @property
    def consumer(self) -> AIOKafkaConsumer:
        assert self._consumer is not None, "used before on_start"
        return self._consumer

    async def start_consumer(
        self, consumer: AIOKafkaConsumer, group_id: str, topics: Iterable[str]
    ) -> None:
        """Start `consumer` (subscribed to `topics` in `group_id`); its lag is sampled with the
        worker's other groups."""
        self._consumer = consumer
        await consumer.start()
        self._group = group_id
        self.resources.consumer_groups.add(group_id, topics, consumer)

    async def consume(self) -> None:
        """Batches until `should_stop`; the batch in hand is finished and committed."""
        raise NotImplementedError

    async def on_started(self) -> None:
        self._consuming = self.add_future(self.consume())

    async def on_stop(self) -> None:
        await self.finish_consuming()
        await self.close_consumer()

    async def finish_consuming(self) -> None:
        """`should_stop` is already true: wait (a bounded time) for the loop to return."""
        if self._consuming is None or self._consuming.done():
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._consuming), STOP_GRACE_S)
        except TimeoutError:
            log.warning("%s: batch not finished after %.0f s; abandoned", self.flow, STOP_GRACE_S)
            self._consuming.cancel()

    async def close_consumer(self) -> None:
        if self._group is not None:
            self.resources.consumer_groups.discard(self._group)
        if self._consumer is not None:
            await self._consumer.stop()

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        try:
            await self.consumer.commit(offsets)
        except KafkaError as error:
            # Typically a rebalance took the partitions away: their next owner reads the batch
            # again, and the flow's sink recognises what it already stored.
            log.warning(
                "%s: offsets not committed (%r); the batch will be re-read", self.flow, error
            )
