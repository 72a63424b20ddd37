"""Create the catalog's topics at start-up; idempotent, and safe when workers race."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from runtime import kafka
from runtime.settings import ResolvedSettings
from topics.catalog import (
    CO_PARTITIONED,
    DEAD_LETTER_TOPICS,
    TOPICS,
    DeadLetterSpec,
    TopicSpec,
)


class TopicLayoutError(RuntimeError):
    """Existing topics a flow cannot run on as they are; the message says how to fix them."""


def min_insync_replicas(replication: int) -> int | None:
    """Two copies must acknowledge an `acks=all` write once there are three: one broker may
    fail without stopping producers or losing acknowledged data. None: the broker's default."""
    return 2 if replication >= 3 else None


def planned_topics(partitions: int, replication: int) -> list[NewTopic]:
    planned = []
    specs: tuple[TopicSpec | DeadLetterSpec, ...] = (*TOPICS, *DEAD_LETTER_TOPICS)
    min_insync = min_insync_replicas(replication)
    for spec in specs:
        configs = {"cleanup.policy": spec.cleanup_policy, "retention.ms": str(spec.retention_ms)}
        if min_insync is not None:
            configs["min.insync.replicas"] = str(min_insync)
        planned.append(
            NewTopic(
                name=spec.name,
                num_partitions=spec.partitions or partitions,
                replication_factor=replication,
                topic_configs=configs,
            )
        )
    return planned


async def ensure_topics(
    settings: ResolvedSettings, partitions: int | None = None, replication: int | None = None
) -> list[str]:
    """Create the topics that do not exist yet; return the names created. Partitions and
    replication default to SCRIBE_TOPIC_PARTITIONS and SCRIBE_TOPIC_REPLICATION."""
    planned = planned_topics(
        partitions or settings.base.topic_partitions,
        replication or settings.base.topic_replication,
    )
    admin = kafka.admin(settings)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in planned if t.name not in existing]
        created = []
        for new_topic in missing:
            try:
                await admin.create_topics([new_topic])
                created.append(new_topic.name)
            except TopicAlreadyExistsError:
                pass  # another worker created it between our list and our create
        return created
    finally:
        await admin.close()


async def check_co_partitioned(settings: ResolvedSettings) -> None:
    """Raise `TopicLayoutError` if topics a flow reads together have different partition
    counts: a world's ticks would reach another worker than its events."""
    admin = kafka.admin(settings)
    await admin.start()
    try:
        counts = await partition_counts(admin, [t.name for g in CO_PARTITIONED for t in g])
    finally:
        await admin.close()
    mismatches = partition_mismatches(counts, [[t.name for t in g] for g in CO_PARTITIONED])
    if mismatches:
        raise TopicLayoutError("; ".join(mismatches))


async def partition_counts(admin: AIOKafkaAdminClient, names: Sequence[str]) -> dict[str, int]:
    """The partition count of each of these topics that exists."""
    # Only the existing ones are described: a broker may create a topic it is asked about.
    existing = set(await admin.list_topics())
    wanted = [n for n in names if n in existing]
    if not wanted:
        return {}  # an empty list would describe every topic
    described = await admin.describe_topics(wanted)
    return {t["topic"]: len(t["partitions"]) for t in described if t["partitions"]}


async def existing_partitions(
    settings: ResolvedSettings, names: Sequence[str]
) -> list[TopicPartition]:
    """Every partition of each of these topics that exists, asked of the brokers. Not of a
    consumer: on Apache Kafka its `partitions_for_topic` knows only the topics it fetched
    metadata for, even after `topics()` listed them, and says None for the rest."""
    client = kafka.admin(settings)
    await client.start()
    try:
        counts = await partition_counts(client, names)
    finally:
        await client.close()
    return sorted(TopicPartition(t, p) for t, n in counts.items() for p in range(n))


def partition_mismatches(counts: Mapping[str, int], groups: Iterable[Sequence[str]]) -> list[str]:
    """What is wrong with each group of co-partitioned topics whose partition counts differ,
    and how to fix it."""
    problems = []
    for names in groups:
        present = {name: counts[name] for name in names if name in counts}
        if len(set(present.values())) > 1:
            listed = ", ".join(f"{name} has {n}" for name, n in present.items())
            most = max(present.values())
            problems.append(
                f"{listed} partitions, but they are read together by key and must have the "
                f"same count: stop the workers, raise the smaller ones to {most} partitions "
                f"(kafka-topics.sh --alter --partitions {most}), then start them again"
            )
    return problems
