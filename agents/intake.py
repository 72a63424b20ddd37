"""Decode-or-dead-letter for every flow: the decode a flow's `ConsumerSpec` topics need, and
the writer that stores a bad record in its topic's `.dlq` with the reason. The runtime calls
them for each record in offset order (`runtime.source.BatchSource.fill`)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar, cast

from aiokafka.errors import KafkaError

from runtime.source import DeadLetterWriter, Received, Record, Rejected
from runtime.spec import ConsumerSpec
from schemas import DecodeError, decode
from schemas.events import Event
from sinks.retry import until_written
from topics.catalog import TopicSpec, topic
from topics.dlq import DeadLetters

__all__ = ["Received", "dead_letter_writer", "decoder"]

log = logging.getLogger(__name__)

E = TypeVar("E", bound=Event)

DLQ_RETRYABLE = (KafkaError, OSError, TimeoutError)


def decoder(model: type[E], *specs: TopicSpec) -> Callable[[Record], E | Rejected]:
    """Each record as its topic's model (a kind of `model`), or why not."""
    models = {spec.name: spec.model for spec in specs}
    if not all(issubclass(m, model) for m in models.values()):
        raise TypeError(f"the models of {list(models)} are not all {model.__name__}")

    def decode_record(record: Record) -> E | Rejected:
        if record.value is None:
            return Rejected("json", "empty message (no value)")
        try:
            return cast(E, decode(record.value, models[record.topic]))
        except DecodeError as error:
            return Rejected(error.kind, error.reason)

    return decode_record


def dead_letter_writer(
    dead_letters: DeadLetters, spec: ConsumerSpec, into: TopicSpec | None = None
) -> DeadLetterWriter:
    """Stores a record in `<topic>.dlq` (or in `into`'s, for a flow whose internal topics
    have none), retried while Kafka is unreachable, so its offset is never committed before
    its dead letter is stored; a warning names it (the worker's log holds back a flood of
    them, `runtime.logs`)."""

    async def write(record: Record, kind: str, reason: str) -> None:
        await until_written(
            "kafka.dlq",
            dead_letters.send,
            into or topic(record.topic),
            record,
            kind,
            reason,
            spec.agent_of(record.topic),
            retryable=DLQ_RETRYABLE,
        )
        log.warning(
            "%s: %s partition %d offset %d dead-lettered (%s): %s",
            spec.flow,
            record.topic,
            record.partition,
            record.offset,
            kind,
            reason,
            extra={"flow": spec.flow},
        )

    return write
