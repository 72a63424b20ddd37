"""The source's rebalance listener counts what each flow holds, per topic, for /metrics: how
evenly `--scale worker=N` spreads the load (the "Partitions held per worker" panel)."""

from __future__ import annotations

from aiokafka import TopicPartition

from runtime.metrics import ASSIGNED_PARTITIONS
from runtime.source import count_assignment
from runtime.spec import ConsumerSpec


def test_assigned_partitions_are_counted_per_flow_and_topic() -> None:
    world = ConsumerSpec("world-count-test", ("world.events", "world.ticks"))
    count_assignment(
        world,
        {
            TopicPartition("world.events", 0),
            TopicPartition("world.events", 3),
            TopicPartition("world.ticks", 1),
            TopicPartition("usage.events", 0),  # not this flow's topic
        },
    )
    counted = ASSIGNED_PARTITIONS.labels
    assert counted(flow="world-count-test", topic="world.events")._value.get() == 2
    assert counted(flow="world-count-test", topic="world.ticks")._value.get() == 1
    count_assignment(world, {TopicPartition("world.ticks", 1)})  # after a rebalance
    assert counted(flow="world-count-test", topic="world.events")._value.get() == 0
