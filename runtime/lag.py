"""Consumer lag per consumer group, topic and partition, for the partitions this worker owns.

The flows register each consumer group they run, with the consumer holding its partitions, in
the worker's `ConsumerGroups`; one `LagSampler` per worker samples them all on a timer, so no
read loop measures lag itself.

lag = end offset - the group's committed offset (what `kafka-consumer-groups` reports). The end
offset is the larger of two answers: the high watermark the group's own consumer saw in its
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
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

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


class Assigned(Protocol):
    """What the sampler needs of a group's consumer (an aiokafka consumer has it)."""

    def assignment(self) -> Iterable[Any]: ...

    def highwater(self, tp: Any) -> int | None: ...


@dataclass(frozen=True)
class GroupMember:
    """This worker's membership in a consumer group: the topics the group reads and the
    consumer that holds the worker's partitions of them."""

    group: str
    topics: frozenset[str]
    consumer: Assigned


class ConsumerGroups:
    """The consumer groups this worker runs. A flow adds its group once its consumer has
    started and discards it when the consumer stops."""

    def __init__(self) -> None:
        self._members: dict[str, GroupMember] = {}

    def add(self, group: str, topics: Iterable[str], consumer: Assigned) -> None:
        self._members[group] = GroupMember(group, frozenset(topics), consumer)

    def discard(self, group: str) -> None:
        self._members.pop(group, None)

    def __iter__(self) -> Iterator[GroupMember]:
        return iter(list(self._members.values()))

    def names(self) -> list[str]:
        return sorted(self._members)


class OffsetReader:
    """Reads any group's committed offsets (an admin client) and the partitions' log start and
    end offsets (a consumer in no group, so it joins nothing and causes no rebalance). It is
    also the worker's Kafka health probe: `topics()` is a metadata round trip."""

    def __init__(self, settings: ResolvedSettings) -> None:
        self._settings = settings
        self._consumer: AIOKafkaConsumer | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self._lock = asyncio.Lock()

    async def _started(self) -> tuple[AIOKafkaConsumer, AIOKafkaAdminClient]:
        async with self._lock:
            if self._consumer is None:
                consumer = kafka.consumer(self._settings, None, request_timeout_ms=5000)
                await consumer.start()
                self._consumer = consumer
            if self._admin is None:
                admin = kafka.admin(self._settings, request_timeout_ms=5000)
                await admin.start()
                self._admin = admin
            return self._consumer, self._admin

    async def topics(self) -> set[str]:
        consumer, _ = await self._started()
        return set(await consumer.topics())

    async def committed(
        self, group: str, partitions: list[TopicPartition]
    ) -> dict[TopicPartition, int]:
        """The group's committed offsets of `partitions`; a partition with none is left out."""
        if not partitions:
            return {}
        _, admin = await self._started()
        answer = await admin.list_consumer_group_offsets(group, partitions=partitions)
        return {
            TopicPartition(tp.topic, tp.partition): int(meta.offset)
            for tp, meta in answer.items()
            if meta.offset >= 0
        }

    async def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        if not partitions:
            return {}
        consumer, _ = await self._started()
        return {tp: int(o) for tp, o in (await consumer.end_offsets(partitions)).items()}

    async def log_starts(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        if not partitions:
            return {}
        consumer, _ = await self._started()
        return {tp: int(o) for tp, o in (await consumer.beginning_offsets(partitions)).items()}

    async def close(self) -> None:
        async with self._lock:
            if self._consumer is not None:
                await self._consumer.stop()
                self._consumer = None
            if self._admin is not None:
                await self._admin.close()
                self._admin = None


def fetched_highwaters(consumer: Assigned, partitions: Iterable[TopicPartition]) -> dict[Any, int]:
    """The high watermark of each partition from the consumer's last fetch response (no
    request). A partition not fetched yet, or just revoked, has none."""
    result = {}
    for tp in partitions:
        try:
            highwater = consumer.highwater(tp)
        except Exception:  # revoked between assignment() and here: no figure for it this round
            continue
        if highwater is not None:
            result[tp] = int(highwater)
    return result


LagKey = tuple[str, TopicPartition]  # (group, partition)


class LagSampler:
    """Sets `scribe_consumer_lag_messages` for every registered group's partitions this worker
    owns, and removes those it no longer owns (or whose group stopped), so several workers
    never report one partition twice. A group whose offsets cannot be read this round keeps
    its last figures and is logged; the others are still sampled."""

    def __init__(self, groups: ConsumerGroups, offsets: OffsetReader) -> None:
        self.groups = groups
        self.offsets = offsets
        self._reported: set[tuple[str, str, str]] = set()

    async def sample(self) -> dict[LagKey, int]:
        lags: dict[LagKey, int] = {}
        kept: set[str] = set()
        for member in self.groups:
            try:
                found = await self._group_lag(member)
            except (KafkaError, OSError) as error:
                log.warning("consumer lag of %s not sampled (%r); will retry", member.group, error)
                kept.add(member.group)
                continue
            lags.update({(member.group, tp): lag for tp, lag in found.items()})
        self._publish(lags, kept)
        return lags

    async def _group_lag(self, member: GroupMember) -> dict[TopicPartition, int]:
        owned = sorted(
            TopicPartition(tp.topic, tp.partition)
            for tp in member.consumer.assignment()
            if tp.topic in member.topics
        )
        committed = await self.offsets.committed(member.group, owned)
        listed = await self.offsets.end_offsets(owned)
        fetched = fetched_highwaters(member.consumer, owned)
        starts = await self.offsets.log_starts([tp for tp in owned if tp not in committed])
        return {
            tp: lag
            for tp in owned
            if (
                lag := partition_lag(
                    committed.get(tp), fetched.get(tp), listed.get(tp), starts.get(tp, 0)
                )
            )
            is not None
        }

    def _publish(self, lags: Mapping[LagKey, int], kept: set[str]) -> None:
        current = {(group, tp.topic, str(tp.partition)): lag for (group, tp), lag in lags.items()}
        still = {key for key in self._reported if key[0] in kept}
        for group, topic, partition in self._reported - set(current) - still:
            CONSUMER_LAG.remove(group, topic, partition)
        for (group, topic, partition), lag in current.items():
            CONSUMER_LAG.labels(group=group, topic=topic, partition=partition).set(lag)
        self._reported = set(current) | still
