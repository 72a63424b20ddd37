"""The invalidation consumer: a plain aiokafka batch consumer that the Faust worker runs.

Why not a Faust agent: the flow needs a window that opens with the first message, reading that
goes on while the sinks work (so a burst coalesces more), real partition pauses while a sink
is down, and commits that come strictly after delivery. A Faust agent acks a batch when it
asks for the next one and cannot do the two stages below.

Two stages, one window at a time each:
1. Redis + L1 broadcast (retried until Redis answers; partitions pause meanwhile);
2. CDN, which merges every window that queued up while it was purging; then the offsets of
   those windows are committed. Commits therefore never pass an undelivered message.
Bad messages go to the DLQ as they are read; their offsets ride along with the next window.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from agents.invalidation.coalesce import Coalescer, Window, merge
from agents.invalidation.config import InvalidationSettings
from agents.invalidation.delivery import KAFKA_RETRYABLE, Delivery
from runtime import kafka
from runtime.lag import ConsumerGroups
from runtime.metrics import COALESCED_TARGETS, MESSAGES_IN
from runtime.settings import ResolvedSettings
from schemas import DecodeError, decode
from schemas.events import CacheInvalidation
from sinks.retry import until_written
from topics.catalog import CACHE_INVALIDATIONS
from topics.dlq import DeadLetters, Origin

log = logging.getLogger(__name__)

AGENT = "invalidation"  # the `agent` label of this flow's metrics
IDLE_POLL_S = 0.1
# How long the broker may hold a fetch open waiting for data (aiokafka defaults to 500 ms).
FETCH_MAX_WAIT_MS = 20
BUSY_POLL_S = 0.005


def consumer_group(app_id: str) -> str:
    """The consumer group of the invalidation flow (Faust's own group is `app_id`)."""
    return f"{app_id}.invalidation"


class _Revocations(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, committed: dict[TopicPartition, int]) -> None:
        self.committed = committed

    async def on_partitions_revoked(self, revoked: Any) -> None:
        # The next owner starts from the broker's committed offset; windows still in flight
        # for these partitions are delivered but not committed here (at least once).
        for tp in revoked:
            self.committed.pop(tp, None)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        return None


class InvalidationConsumer:
    def __init__(
        self,
        *,
        kafka_settings: ResolvedSettings,
        group_id: str,
        groups: ConsumerGroups,
        settings: InvalidationSettings,
        delivery: Delivery,
        dead_letters: DeadLetters,
    ) -> None:
        self.settings = settings
        self.delivery = delivery
        self.dead_letters = dead_letters
        self._consumer = kafka.consumer(
            kafka_settings, group_id, fetch_max_wait_ms=FETCH_MAX_WAIT_MS
        )
        self._group_id = group_id
        self._groups = groups  # the worker samples the lag of the groups registered there
        self._coalescer = Coalescer(settings.window_seconds)
        self._committed: dict[TopicPartition, int] = {}
        self._cdn_queue: list[Window] = []
        self._cdn_wakeup = asyncio.Event()
        self._cdn_idle = asyncio.Event()
        self._cdn_idle.set()
        self._redis_task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self.paused = False
        self.uncommitted = 0

    def stop(self) -> None:
        """Ask `run` to stop reading, deliver what it read (within the shutdown budget),
        commit, and return."""
        self._stopping.set()

    async def run(self) -> None:
        self._consumer.subscribe([CACHE_INVALIDATIONS.name], listener=_Revocations(self._committed))
        await self._consumer.start()
        self._groups.add(self._group_id, [CACHE_INVALIDATIONS.name], self._consumer)
        cdn_stage = asyncio.create_task(self._cdn_stage(), name="invalidation-cdn")
        try:
            await self._read_until_stopped(cdn_stage)
            await self._finish(cdn_stage)
        finally:
            self._groups.discard(self._group_id)
            cdn_stage.cancel()
            if self._redis_task is not None:
                self._redis_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await cdn_stage
            await self._consumer.stop()

    async def _read_until_stopped(self, cdn_stage: asyncio.Task[None]) -> None:
        while not self._stopping.is_set():
            if cdn_stage.done():
                cdn_stage.result()  # a bug in the CDN stage surfaces here
                raise RuntimeError("the CDN stage ended unexpectedly")
            if self._redis_task is not None and self._redis_task.done():
                self._redis_task.result()
                self._redis_task = None
            self._pause_if(
                self.delivery.redis_down or self.uncommitted >= self.settings.max_uncommitted
            )
            batches = await self._consumer.getmany(
                timeout_ms=int(self._poll_seconds() * 1000),
                max_records=self.settings.poll_records,
            )
            for messages in batches.values():
                if messages:
                    MESSAGES_IN.labels(topic=CACHE_INVALIDATIONS.name, agent=AGENT).inc(
                        len(messages)
                    )
                for message in messages:
                    await self._take(message)
            if self._redis_task is None and self._coalescer.due(time.monotonic()):
                self._start_window()

    def _poll_seconds(self) -> float:
        left = self._coalescer.time_left(time.monotonic())
        if left is None:
            return IDLE_POLL_S
        if left > 0:
            return max(0.001, min(left, IDLE_POLL_S))
        # Due, but Redis is still busy with the previous window: look again soon, unless
        # Redis is down, when there is nothing to hurry for.
        return IDLE_POLL_S if self.delivery.redis_down else BUSY_POLL_S

    def _pause_if(self, pause: bool) -> None:
        assignment = self._consumer.assignment()
        if pause:
            # Re-applied every round: partitions assigned meanwhile start unpaused.
            self._consumer.pause(*assignment)
        elif self.paused:
            self._consumer.resume(*assignment)
        if pause != self.paused:
            log.warning("invalidation: partitions %s", "paused" if pause else "resumed")
        self.paused = pause

    async def _take(self, message: Any) -> None:
        origin = Origin(
            message.topic, message.partition, message.offset, message.key, message.value
        )
        self.uncommitted += 1
        try:
            if origin.value is None:
                raise DecodeError("json", "empty message (no value)")
            event = decode(origin.value, CacheInvalidation)
        except DecodeError as error:
            await until_written(
                "kafka.dlq",
                self.dead_letters.send,
                CACHE_INVALIDATIONS,
                origin,
                error.kind,
                error.reason,
                retryable=KAFKA_RETRYABLE,
            )
            self._coalescer.skip(origin, time.monotonic())
            return
        self._coalescer.add(event, origin, time.monotonic())

    def _start_window(self) -> None:
        window = self._coalescer.drain()
        COALESCED_TARGETS.labels(stage="received").inc(window.targets_in)
        COALESCED_TARGETS.labels(stage="emitted").inc(window.targets_out)
        self._redis_task = asyncio.create_task(self._redis_stage(window), name="invalidation-redis")

    async def _redis_stage(self, window: Window) -> None:
        await self.delivery.to_redis(window)
        self._cdn_queue.append(window)
        self._cdn_idle.clear()
        self._cdn_wakeup.set()

    async def _cdn_stage(self) -> None:
        while True:
            await self._cdn_wakeup.wait()
            self._cdn_wakeup.clear()
            while self._cdn_queue:
                windows, self._cdn_queue = self._cdn_queue, []
                merged = merge(windows)
                await self.delivery.to_cdn(merged)
                await self._commit(merged)
            self._cdn_idle.set()

    async def _commit(self, window: Window) -> None:
        assignment = self._consumer.assignment()
        offsets: dict[TopicPartition, int] = {}
        for (topic, partition), offset in window.offsets.items():
            tp = TopicPartition(topic, partition)
            if tp in assignment and offset > self._committed.get(tp, -1):
                offsets[tp] = offset
        self.uncommitted -= window.messages
        if not offsets:
            return
        try:
            await self._consumer.commit(offsets)
        except KafkaError as exc:
            # Delivered but not committed: the next owner delivers these again (at least once).
            log.warning("invalidation: commit failed, messages will be redelivered: %s", exc)
            return
        self._committed.update(offsets)

    async def _finish(self, cdn_stage: asyncio.Task[None]) -> None:
        """Deliver and commit what was read, within the shutdown budget; what is left is
        redelivered to whoever owns the partitions next."""

        async def drain() -> None:
            if self._redis_task is not None:
                await self._redis_task
                self._redis_task = None
            if self._coalescer.pending_messages:
                self._start_window()
                assert self._redis_task is not None
                await self._redis_task
            await self._cdn_idle.wait()

        try:
            await asyncio.wait_for(drain(), self.settings.shutdown_seconds)
        except TimeoutError:
            log.warning(
                "invalidation: %d message(s) not delivered before shutdown; they will be "
                "redelivered",
                self.uncommitted,
            )
