"""Turn a Faust stream of raw messages into validated events; bad input goes to the DLQ.

Faust agents call `decoded_batches`, batch consumers `decoded`: each batch holds only valid
events, and every invalid message before it has already been stored in the topic's `.dlq`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from schemas import DecodeError, decode
from schemas.events import Event
from scribe.metrics import MESSAGES_IN, current_agent_name
from topics.catalog import TopicSpec
from topics.dlq import DeadLetters, Origin

E = TypeVar("E", bound=Event)


@dataclass(frozen=True)
class Received(Generic[E]):
    """A valid event with where it came from, so a later stage can still dead-letter it."""

    event: E
    origin: Origin


async def decoded(
    origins: Sequence[Origin],
    spec: TopicSpec,
    model: type[E],
    dead_letters: DeadLetters,
    agent: str,
) -> list[Received[E]]:
    """The valid events among `origins`, in order; each invalid one is in the DLQ on return.
    `agent` labels the counts (a batch consumer service is no Faust agent)."""
    batch: list[Received[E]] = []
    MESSAGES_IN.labels(topic=spec.name, agent=agent).inc(len(origins))
    for origin in origins:
        try:
            if origin.value is None:
                raise DecodeError("json", "empty message (no value)")
            event = decode(origin.value, model)
        except DecodeError as error:
            await dead_letters.send(spec, origin, error.kind, error.reason, agent=agent)
            continue
        batch.append(Received(event, origin))
    return batch


async def decoded_batches(
    stream: Any,
    spec: TopicSpec,
    model: type[E],
    dead_letters: DeadLetters,
    *,
    max_batch: int = 500,
    within: float = 0.1,
) -> AsyncIterator[list[Received[E]]]:
    """Batches of valid events, in partition order. Faust acks a batch's messages when the
    agent asks for the next batch, so the caller must finish writing before it loops."""
    agent = current_agent_name()
    async for faust_events in stream.take_events(max_batch, within=within):
        origins = [
            Origin(
                spec.name,
                faust_event.message.partition,
                faust_event.message.offset,
                faust_event.message.key,
                faust_event.value,
            )
            for faust_event in faust_events
        ]
        batch = await decoded(origins, spec, model, dead_letters, agent)
        if batch:
            yield batch
