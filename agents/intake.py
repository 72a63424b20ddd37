"""Turn raw messages into validated events; bad input goes to the DLQ.

A batch from `decoded` holds only valid events, and every invalid message among its inputs has
already been stored in the topic's `.dlq`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from runtime.metrics import MESSAGES_IN
from schemas import DecodeError, decode
from schemas.events import Event
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
