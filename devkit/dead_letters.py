"""The dead letters a run left behind, per source topic and kind: what the demo's summary and
the load tests count, so a valid event sent to a DLQ shows instead of hiding behind the bad
ones a run meant to send."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from aiokafka import AIOKafkaConsumer

from runtime.settings import kafka_bootstrap_servers
from topics.catalog import DEAD_LETTER_TOPICS
from topics.dlq import H_ERROR, H_ERROR_KIND, H_FAILED_AT

QUIET_POLLS = 2  # and at the high watermarks: read to the end


@dataclass(frozen=True)
class DeadLetter:
    topic: str  # the input topic the message was sent to
    kind: str
    reason: str
    key: bytes | None
    failed_at: datetime


def tally(letters: list[DeadLetter]) -> Counter[tuple[str, str]]:
    """How many dead letters per (source topic, kind)."""
    return Counter((letter.topic, letter.kind) for letter in letters)


async def dead_letters_since(
    kafka_url: str,
    since: datetime,
    *,
    enough: Callable[[list[DeadLetter]], bool] = lambda _: True,
    timeout: float = 30.0,
) -> list[DeadLetter]:
    """Every dead letter written at or after `since` (a UTC time), from every DLQ topic: read
    to the end (the high watermark of the last fetch of each partition), and on until
    `enough(found)` or `timeout` (for dead letters still to come)."""
    sources = {spec.name: spec.source.name for spec in DEAD_LETTER_TOPICS}
    consumer = AIOKafkaConsumer(
        *sources,
        bootstrap_servers=kafka_bootstrap_servers(kafka_url),
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        fetch_max_wait_ms=100,
    )
    await consumer.start()
    found: list[DeadLetter] = []
    try:
        deadline = time.monotonic() + timeout
        quiet = 0  # polls in a row that brought nothing
        while time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            quiet = 0 if batches else quiet + 1
            for messages in batches.values():
                for message in messages:
                    headers = dict(message.headers or ())
                    if H_FAILED_AT not in headers:
                        continue  # not written by a Scribe agent: no time to compare
                    failed_at = datetime.fromisoformat(headers[H_FAILED_AT].decode())
                    if failed_at >= since:
                        found.append(
                            DeadLetter(
                                sources[message.topic],
                                headers.get(H_ERROR_KIND, b"").decode(),
                                headers.get(H_ERROR, b"").decode(errors="replace"),
                                message.key,
                                failed_at,
                            )
                        )
            if quiet >= QUIET_POLLS and await _at_end(consumer) and enough(found):
                break
    finally:
        await consumer.stop()
    return found


async def _at_end(consumer: AIOKafkaConsumer) -> bool:
    """Whether every assigned partition has been fetched at least once and read to the high
    watermark its last fetch reported."""
    partitions = consumer.assignment()
    if not partitions:
        return False
    for partition in partitions:
        highwater = consumer.highwater(partition)
        if highwater is None or await consumer.position(partition) < highwater:
            return False
    return True
