"""Consumer lag per topic and partition, for the partitions this worker owns.

lag = end offset - the group's committed offset (what `kafka-consumer-groups` reports). The end
offset is the larger of two answers: the high watermark the worker's own consumer saw in its
last fetch response, and the broker's ListOffsets (latest). On Apache Kafka both are right. On
the embedded broker (Tansu) ListOffsets answers the base offset of the partition's last record
batch + 1 — too small whenever that batch holds more than one record — while the fetch high
watermark is right; taking the larger keeps the figure right on both. Limit on Tansu: a
partition the consumer has paused (its buffer is full) is not fetched, so its high watermark is
not refreshed and the lag there can read low until fetching resumes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from runtime import kafka
from runtime.metrics import CONSUMER_LAG
from runtime.settings import ResolvedSettings

log = logging.getLogger(__name__)


def partition_lag(
    committed: int | None,
    fetched_highwater: int | None,
    listed_end: int | None,
    log_start: int = 0,
) -> int | None:
    """Messages not yet committed by the group, or None when no end offset is known. With no
    commit yet the group starts at the log start (auto_offset_reset=earliest)."""
    ends = [offset for offset in (fetched_highwater, listed_end) if offset is not None]
    if not ends:
        return None
    start = committed if committed is not None else log_start
    return max(max(ends) - start, 0)


class GroupOffsets:
    """Reads a consumer group's committed offsets and the partitions' end offsets with a
    consumer of its own that never joins the group (so it causes no rebalance). It is also the
    worker's Kafka health probe: `topics()` is a metadata round trip."""

    def __init__(self, settings: ResolvedSettings, group_id: str) -> None:
        self._settings = settings
        self._group_id = group_id
        self._consumer: AIOKafkaConsumer | None = None
        self._lock = asyncio.Lock()

    async def _started(self) -> AIOKafkaConsumer:
        async with self._lock:
            if self._consumer is None:
                consumer = kafka.consumer(self._settings, self._group_id, request_timeout_ms=5000)
                await consumer.start()
                self._consumer = consumer
            return self._consumer

    async def topics(self) -> set[str]:
        consumer = await self._started()
        return set(await consumer.topics())

    async def committed(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        consumer = await self._started()
        result = {}
        for tp in partitions:
            offset = await consumer.committed(tp)
            if offset is not None:
                result[tp] = int(offset)
        return result

    async def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        if not partitions:
            return {}
        consumer = await self._started()
        return {tp: int(o) for tp, o in (await consumer.end_offsets(partitions)).items()}

    async def log_starts(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        if not partitions:
            return {}
        consumer = await self._started()
        return {tp: int(o) for tp, o in (await consumer.beginning_offsets(partitions)).items()}

    async def close(self) -> None:
        async with self._lock:
            if self._consumer is not None:
                await self._consumer.stop()
                self._consumer = None


def fetched_highwaters(faust_consumer: Any, partitions: Iterable[TopicPartition]) -> dict[Any, int]:
    """The high watermark of each partition from the worker's consumer's last fetch response
    (no request). A partition not fetched yet, or just revoked, has none."""
    result = {}
    for tp in partitions:
        try:
            highwater = faust_consumer.highwater(tp)
        except Exception:  # revoked between assignment() and here: no figure for it this round
            continue
        if highwater is not None:
            result[tp] = int(highwater)
    return result


class LagSampler:
    """Sets `scribe_consumer_lag_messages` for the catalog topics' partitions this worker owns
    and removes the partitions it no longer owns, so several workers never report one twice."""

    def __init__(self, offsets: GroupOffsets, topics: Iterable[str]) -> None:
        self.offsets = offsets
        self.topics = frozenset(topics)
        self._reported: set[tuple[str, str]] = set()

    async def sample(self, assignment: Iterable[Any], faust_consumer: Any) -> dict[Any, int]:
        owned = sorted(
            (
                TopicPartition(tp.topic, tp.partition)
                for tp in assignment
                if tp.topic in self.topics
            ),
        )
        committed = await self.offsets.committed(owned)
        listed = await self.offsets.end_offsets(owned)
        fetched = fetched_highwaters(faust_consumer, owned)
        starts = await self.offsets.log_starts([tp for tp in owned if tp not in committed])
        lags = {
            tp: lag
            for tp in owned
            if (
                lag := partition_lag(
                    committed.get(tp), fetched.get(tp), listed.get(tp), starts.get(tp, 0)
                )
            )
            is not None
        }
        self._publish(lags)
        return lags

    def _publish(self, lags: Mapping[TopicPartition, int]) -> None:
        current = {(tp.topic, str(tp.partition)): lag for tp, lag in lags.items()}
        for topic, partition in self._reported - set(current):
            CONSUMER_LAG.remove(topic, partition)
        for (topic, partition), lag in current.items():
            CONSUMER_LAG.labels(topic=topic, partition=partition).set(lag)
        self._reported = set(current)
