"""Topic creation settings: with three copies, two must acknowledge every write. Topics read
together by key must have equal partition counts, or the worker refuses to start."""

from __future__ import annotations

import uuid

import pytest
from aiokafka.admin import NewTopic

from runtime import kafka
from runtime.settings import Settings
from topics.admin import (
    min_insync_replicas,
    partition_counts,
    partition_mismatches,
    planned_topics,
)
from topics.catalog import CO_PARTITIONED, DEAD_LETTER_TOPICS, TOPICS, WORLD_EVENTS, WORLD_TICKS


def test_min_insync_replicas_is_set_from_three_copies_on() -> None:
    assert min_insync_replicas(1) is None
    assert min_insync_replicas(2) is None
    assert min_insync_replicas(3) == 2
    assert min_insync_replicas(5) == 2


def test_every_topic_gets_the_replication_and_min_insync_replicas() -> None:
    planned = planned_topics(partitions=6, replication=3)
    assert len(planned) == len(TOPICS) + len(DEAD_LETTER_TOPICS)
    for topic in planned:
        assert topic.replication_factor == 3
        assert topic.topic_configs["min.insync.replicas"] == "2"


def test_a_single_copy_leaves_min_insync_replicas_to_the_broker() -> None:
    for topic in planned_topics(partitions=4, replication=1):
        assert "min.insync.replicas" not in topic.topic_configs


def test_co_partitioned_topics_with_equal_counts_pass() -> None:
    counts = {"world.events": 8, "world.ticks": 8, "usage.events": 3}
    assert partition_mismatches(counts, [["world.events", "world.ticks"]]) == []


def test_co_partitioned_topics_with_different_counts_say_how_to_fix_them() -> None:
    counts = {"world.events": 8, "world.ticks": 4}
    [problem] = partition_mismatches(counts, [["world.events", "world.ticks"]])
    assert "world.events has 8, world.ticks has 4 partitions" in problem
    assert "--partitions 8" in problem


def test_the_world_flow_reads_its_two_topics_co_partitioned() -> None:
    assert (WORLD_EVENTS, WORLD_TICKS) in CO_PARTITIONED


@pytest.mark.integration
async def test_partition_counts_are_read_from_the_broker(kafka_url: str) -> None:
    run = uuid.uuid4().hex[:8]
    names = (f"copart-a-{run}", f"copart-b-{run}")
    settings = Settings(
        kafka_url=kafka_url, database_url="postgresql://unused", redis_url="redis://unused"
    ).require()
    admin = kafka.admin(settings)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(names[0], 3, 1), NewTopic(names[1], 2, 1)])
        counts = await partition_counts(admin, [*names, f"copart-missing-{run}"])
    finally:
        await admin.close()
    assert counts == {names[0]: 3, names[1]: 2}
    assert partition_mismatches(counts, [names]) != []
