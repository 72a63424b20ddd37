"""Create the catalog's topics at start-up; idempotent, and safe when workers race."""

from __future__ import annotations

from aiokafka.admin import NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from runtime import kafka
from runtime.settings import ResolvedSettings
from topics.catalog import DEAD_LETTER_TOPICS, TOPICS, DeadLetterSpec, TopicSpec


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
