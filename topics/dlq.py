"""Dead letters: what could not be decoded, validated or delivered goes to `<topic>.dlq`
with the original bytes and the reason in headers, and the agent moves on."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from runtime.metrics import DEAD_LETTERS, MESSAGES_OUT, current_agent_name
from runtime.source import Record
from schemas.codec import MAX_MESSAGE_BYTES
from topics.catalog import TopicSpec

MAX_REASON_BYTES = 4096
# The original bytes are kept up to the codec's input limit; a larger message (refused as `size`)
# keeps its first MAX_ORIGINAL_BYTES and says how big it was, so the DLQ record still fits the
# producer's and the broker's request limits (see DEAD_LETTER_REQUEST_BYTES).
MAX_ORIGINAL_BYTES = MAX_MESSAGE_BYTES
DEAD_LETTER_REQUEST_BYTES = MAX_ORIGINAL_BYTES + 64 * 1024

# Header names; consumers of the DLQ topics rely on these.
H_ERROR = "scribe-error"
H_ERROR_KIND = "scribe-error-kind"
H_SOURCE_TOPIC = "scribe-source-topic"
H_SOURCE_PARTITION = "scribe-source-partition"
H_SOURCE_OFFSET = "scribe-source-offset"
H_FAILED_AT = "scribe-failed-at"
H_ORIGINAL_SIZE = "scribe-original-size"  # only on records whose value was cut


def dead_letter_headers(
    kind: str, reason: str, topic: str, partition: int, offset: int
) -> list[tuple[str, bytes]]:
    return [
        (H_ERROR, reason.encode()[:MAX_REASON_BYTES]),
        (H_ERROR_KIND, kind.encode()),
        (H_SOURCE_TOPIC, topic.encode()),
        (H_SOURCE_PARTITION, str(partition).encode()),
        (H_SOURCE_OFFSET, str(offset).encode()),
        (H_FAILED_AT, datetime.now(UTC).isoformat().encode()),
    ]


# Where a consumed message came from, with its original bytes: the runtime's record.
Origin = Record


class DeadLetters:
    """Sends to the DLQ through the Faust app's producer and waits for the broker's ack, so a
    bad message's offset is never committed before its dead letter is stored."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def send(
        self, spec: TopicSpec, origin: Origin, kind: str, reason: str, agent: str | None = None
    ) -> None:
        """`agent` labels the counts; by default the Faust agent running the call."""
        headers = dead_letter_headers(kind, reason, origin.topic, origin.partition, origin.offset)
        value = origin.value
        if value is not None and len(value) > MAX_ORIGINAL_BYTES:
            headers.append((H_ORIGINAL_SIZE, str(len(value)).encode()))
            value = value[:MAX_ORIGINAL_BYTES]
        await self.app.producer.send_and_wait(
            spec.dlq_name,
            origin.key,
            value,
            partition=None,
            timestamp=None,
            headers=headers,
        )
        agent = agent or current_agent_name()
        DEAD_LETTERS.labels(topic=spec.name, agent=agent, kind=kind).inc()
        MESSAGES_OUT.labels(topic=spec.dlq_name, agent=agent).inc()
