"""Topic creation settings: with three copies, two must acknowledge every write."""

from __future__ import annotations

from topics.admin import min_insync_replicas, planned_topics
from topics.catalog import DEAD_LETTER_TOPICS, TOPICS


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
