"""`consumer_group` names the group that reads a topic in a worker, for the tests and tools
that read a group's committed offsets: each flow's own, `<app_id>.<flow>`."""

from __future__ import annotations

import re

import pytest

from agents import consumer_group
from topics.catalog import TOPICS


@pytest.mark.parametrize(
    ("topic", "group"),
    [
        ("ai.requests", "scribe.router-decide"),
        ("ai.requests.held", "scribe.router-held"),
        ("ai.lane.urgent", "scribe.router-urgent"),
        ("ai.lane.deferred", "scribe.router-deferred"),
        ("ai.router.settlements", "scribe.router-settle"),
        ("usage.events", "scribe.usage"),
        ("world.events", "scribe.world"),
        ("world.ticks", "scribe.world"),
        ("cache.invalidations", "scribe.invalidation"),
    ],
)
def test_each_topic_read_by_a_flow_names_that_flows_group(topic: str, group: str) -> None:
    assert consumer_group("scribe", topic) == group


def test_a_topic_no_flow_reads_is_refused_by_name() -> None:
    unread = "ai.responses"
    assert unread in {spec.name for spec in TOPICS}
    with pytest.raises(ValueError, match=re.escape("no flow reads 'ai.responses'")):
        consumer_group("scribe", unread)
