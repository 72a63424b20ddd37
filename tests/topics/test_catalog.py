from __future__ import annotations

import pytest

from schemas.events import UsageEvent, WorldTick
from schemas.examples import example
from topics.admin import planned_topics
from topics.catalog import (
    AI_RESPONSES,
    DEAD_LETTER_TOPICS,
    INPUT_TOPICS,
    TOPICS,
    UnknownTopicError,
    topic,
    topic_for,
)


def test_the_catalog_names_every_topic_of_the_design() -> None:
    assert {t.name for t in TOPICS} >= {
        "ai.requests",
        "ai.responses",
        "usage.events",
        "world.events",
        "world.ticks",
        "cache.invalidations",
        "budget.alerts",
    }


def test_every_input_topic_has_a_dead_letter_topic() -> None:
    assert {t.name for t in INPUT_TOPICS} == {
        "ai.requests",
        "usage.events",
        "world.events",
        "world.ticks",
        "cache.invalidations",
    }
    assert {d.name for d in DEAD_LETTER_TOPICS} == {f"{t.name}.dlq" for t in INPUT_TOPICS}


def test_output_topics_have_no_dead_letter_topic() -> None:
    with pytest.raises(LookupError):
        _ = AI_RESPONSES.dlq_name


def test_events_are_keyed_by_their_family_key() -> None:
    usage = example(UsageEvent, user_id="u-42")
    assert topic_for(usage).key_of(usage) == b"u-42"
    tick = example(WorldTick, world_id="w-7")
    assert topic_for(tick).key_of(tick) == b"w-7"


def test_unknown_topics_list_the_known_ones() -> None:
    with pytest.raises(UnknownTopicError, match=r"usage\.events"):
        topic("usage.event")


def test_planned_topics_carry_partitions_retention_and_policy() -> None:
    planned = {t.name: t for t in planned_topics(partitions=6, replication=3)}
    assert set(planned) == {t.name for t in TOPICS} | {d.name for d in DEAD_LETTER_TOPICS}
    usage = planned["usage.events"]
    assert usage.num_partitions == 6
    assert usage.replication_factor == 3
    assert usage.topic_configs["cleanup.policy"] == "delete"
    assert int(usage.topic_configs["retention.ms"]) == 30 * 24 * 3600 * 1000
