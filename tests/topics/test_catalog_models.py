"""A producer's event goes to its family's public topic, even when internal topics reuse the
model (the router's ai.requests.ready and ai.requests.held carry AIRequest too)."""

from __future__ import annotations

from schemas.events import AIRequest, AIResponse, UsageEvent
from schemas.examples import example
from topics.catalog import AI_REQUESTS, AI_RESPONSES, USAGE_EVENTS, topic_for


def test_each_family_maps_to_its_public_topic() -> None:
    assert topic_for(example(AIRequest)) is AI_REQUESTS
    assert topic_for(example(AIResponse)) is AI_RESPONSES
    assert topic_for(example(UsageEvent)) is USAGE_EVENTS
