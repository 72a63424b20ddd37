"""The router's intake, a flow on the runtime: ai.requests validated (bad input to
ai.requests.dlq) and split by priority: urgent, high and normal go straight to decide
(`ai.requests.ready`); low and background to the held lane (`ai.requests.held`), which releases
them to decide under its rate cap and window. So a burst of background requests never sits in
front of an urgent one at the per-event decide stage.

Each batch's messages are published and acknowledged before its offsets are committed; a
re-read batch is harmless: decide answers a request it has seen with its earlier response.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace

from aiokafka.errors import KafkaError

from agents.intake import decoder
from agents.router.decide import Emit
from agents.router.policy import LANE_OF_PRIORITY
from runtime import tracing
from runtime.flow import Flow
from runtime.source import DeadLetterWriter, Received
from runtime.spec import ConsumerSpec
from schemas.events import AIRequest, Lane
from topics.catalog import AI_REQUESTS, AI_REQUESTS_HELD, AI_REQUESTS_READY, TopicSpec

INTAKE = ConsumerSpec(
    "router-intake",
    (AI_REQUESTS.name,),
    max_batch=2000,
    poll_ms=20,
    agent_labels={AI_REQUESTS.name: "router"},
)

Publish = Callable[[list[Emit]], Awaitable[None]]


def destination(request: AIRequest) -> TopicSpec:
    held = LANE_OF_PRIORITY[request.priority] is Lane.DEFERRED
    return AI_REQUESTS_HELD if held else AI_REQUESTS_READY


def split(batch: list[Received[AIRequest]]) -> list[Emit]:
    # Keyed by user_id whatever the producer used: decide's tables need it.
    return [
        Emit(
            destination(r.event),
            r.event.user_id.encode(),
            r.origin.value or b"",
            tracing.handed_on(
                "router.intake",
                r.origin.headers,
                {
                    "scribe.request_id": r.event.request_id,
                    "scribe.priority": r.event.priority.value,
                },
            ),
        )
        for r in batch
    ]


class Publishing:
    """The intake's sink: the split requests, each acknowledged by the broker."""

    def __init__(self, publish: Publish) -> None:
        self.publish = publish

    async def write(self, batch: list[Emit]) -> None:
        if batch:
            await self.publish(batch)

    async def close(self) -> None:
        return None


def declare(
    publish: Publish, dead_letter: DeadLetterWriter, fetch_wait_ms: int = INTAKE.fetch_wait_ms
) -> Flow[AIRequest, list[Emit]]:
    return Flow(
        spec=replace(INTAKE, fetch_wait_ms=fetch_wait_ms),
        decode=decoder(AIRequest, AI_REQUESTS),
        dead_letter=dead_letter,
        handle=split,
        sinks=[Publishing(publish)],
        retryable=(KafkaError, OSError),
    )
