"""Reading dead-letter topics back: each `<topic>.dlq` record as a `DeadLetter` (its original
key and bytes with the reason and provenance from the headers `topics/dlq.py` writes), filtered
by kind and time, from the beginning of the log to the end offsets captured when reading began,
so records dead-lettered while it runs (a replay failing again) are not read in the same pass."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from runtime.kafka import consumer as kafka_consumer
from runtime.settings import ResolvedSettings
from topics.admin import existing_partitions
from topics.catalog import INPUT_TOPICS, TopicSpec, UnknownTopicError
from topics.catalog import topic as find_topic
from topics.dlq import (
    DEAD_LETTER_REQUEST_BYTES,
    H_ERROR,
    H_ERROR_KIND,
    H_FAILED_AT,
    H_ORIGINAL_SIZE,
    H_SOURCE_OFFSET,
    H_SOURCE_PARTITION,
    H_SOURCE_TOPIC,
)

DLQ_SUFFIX = ".dlq"
FETCH_WAIT_MS = 100
# A partition that yields nothing for this long although its captured end is not reached (the
# log was truncated under the reader, or the broker went away) ends the read with an error.
STALL_TIMEOUT_S = 60.0
UNKNOWN = "(unknown)"


class DeadLetterReadError(RuntimeError):
    """A dead-letter topic could not be read to its end; the message says which and why."""


def dead_letter_source(name: str) -> TopicSpec:
    """The input topic whose dead letters `name` means: `usage.events` or `usage.events.dlq`."""
    source = name.removesuffix(DLQ_SUFFIX)
    try:
        spec = find_topic(source)
    except UnknownTopicError:
        raise UnknownTopicError(name) from None
    if not spec.has_dlq:
        inputs = ", ".join(t.name for t in INPUT_TOPICS)
        raise LookupError(
            f"{spec.name} is an output topic and has no dead letters; the input topics are: "
            f"{inputs}"
        )
    return spec


@dataclass(frozen=True)
class DeadLetter:
    """One record of a `.dlq` topic: where it is, what failed, and the original message."""

    topic: str  # the .dlq topic
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    kind: str
    reason: str
    source_topic: str
    source_partition: int | None
    source_offset: int | None
    failed_at: datetime | None
    original_size: int | None  # set when the value was cut to fit: not the whole message

    @property
    def address(self) -> str:
        """`<dlq topic>/<partition>/<offset>`: where this dead letter is stored."""
        return f"{self.topic}/{self.partition}/{self.offset}"

    @property
    def truncated(self) -> bool:
        return self.original_size is not None

    @classmethod
    def from_record(cls, record: ConsumerRecord[bytes, bytes]) -> DeadLetter:
        """Headers missing or malformed (a record some other producer wrote) are read as
        unknown rather than refused, so one odd record never hides the rest."""
        topic, timestamp_ms = record.topic, record.timestamp
        found = dict(record.headers or ())

        def text(name: str, default: str = UNKNOWN) -> str:
            raw = found.get(name)
            return default if raw is None else raw.decode("utf-8", errors="replace")

        failed_at = _timestamp(found.get(H_FAILED_AT))
        if failed_at is None and timestamp_ms is not None and timestamp_ms >= 0:
            failed_at = datetime.fromtimestamp(timestamp_ms / 1000, UTC)
        return cls(
            topic=topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key,
            value=record.value,
            kind=text(H_ERROR_KIND),
            reason=text(H_ERROR, ""),
            source_topic=text(H_SOURCE_TOPIC, topic.removesuffix(DLQ_SUFFIX)),
            source_partition=_integer(found.get(H_SOURCE_PARTITION)),
            source_offset=_integer(found.get(H_SOURCE_OFFSET)),
            failed_at=failed_at,
            original_size=_integer(found.get(H_ORIGINAL_SIZE)),
        )


def _integer(raw: bytes | None) -> int | None:
    try:
        return None if raw is None else int(raw)
    except ValueError:
        return None


def _timestamp(raw: bytes | None) -> datetime | None:
    if raw is None:
        return None
    try:
        moment = datetime.fromisoformat(raw.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


_AGO = re.compile(r"^(\d+)\s*([smhdw])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(text: str, now: datetime) -> datetime:
    """`--since`: an ISO 8601 date or time (UTC when no offset is given) or an age such as
    `30m`, `6h`, `2d`, `1w` before `now`."""
    cleaned = text.strip()
    ago = _AGO.match(cleaned)
    if ago:
        return now - timedelta(seconds=int(ago.group(1)) * _UNIT_SECONDS[ago.group(2)])
    try:
        moment = datetime.fromisoformat(cleaned)
    except ValueError:
        raise ValueError(
            f"{text!r} is neither an ISO 8601 time (2026-12-04T18:00:00Z) nor an age "
            "(30m, 6h, 2d, 1w)"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class DeadLetterFilter:
    """Which dead letters a command works on: one kind (`unpriced`, `schema`, ...) and/or
    those that failed at or after `since`. A record without a failure time fails `since`."""

    kind: str | None = None
    since: datetime | None = None

    def matches(self, letter: DeadLetter) -> bool:
        if self.kind is not None and letter.kind != self.kind:
            return False
        if self.since is not None:
            return letter.failed_at is not None and letter.failed_at >= self.since
        return True


async def captured_ends(
    consumer: AIOKafkaConsumer, partitions: list[TopicPartition], timeout: float = 30.0
) -> dict[TopicPartition, int]:
    """Each partition's end offset now: the larger of ListOffsets and a fetch's high watermark.
    Apache Kafka answers both right; the embedded broker answers ListOffsets with the base of
    the last record batch + 1 (too low when that batch holds several records), while its fetch
    high watermark is right. Leaves the partitions positioned at their ends."""
    listed = {tp: int(offset) for tp, offset in (await consumer.end_offsets(partitions)).items()}
    for tp in partitions:
        consumer.seek(tp, max(listed[tp] - 1, 0))
    deadline = time.monotonic() + timeout
    unknown = set(partitions)
    while unknown:
        if time.monotonic() > deadline:
            names = ", ".join(f"{tp.topic}/{tp.partition}" for tp in sorted(unknown))
            raise DeadLetterReadError(f"no fetch answer from the broker for {names}")
        await consumer.getmany(*unknown, timeout_ms=FETCH_WAIT_MS)
        unknown = {tp for tp in unknown if consumer.highwater(tp) is None}
    return {tp: max(listed[tp], int(consumer.highwater(tp) or 0)) for tp in partitions}


class DeadLetterReader:
    """Reads `.dlq` topics once, from their beginning to the ends captured at `start`, with a
    consumer outside any group (nothing is committed, no worker loses a partition)."""

    def __init__(self, settings: ResolvedSettings, topics: Iterable[str]) -> None:
        self.topics = list(topics)
        self.settings = settings
        self.consumer = kafka_consumer(
            settings,
            None,
            fetch_max_wait_ms=FETCH_WAIT_MS,
            max_partition_fetch_bytes=DEAD_LETTER_REQUEST_BYTES,
        )
        self.missing: list[str] = []  # topics the broker does not have (no worker created them)
        self.ends: dict[TopicPartition, int] = {}
        self.starts: dict[TopicPartition, int] = {}

    async def __aenter__(self) -> DeadLetterReader:
        await self.consumer.start()
        try:
            partitions = await existing_partitions(self.settings, self.topics)
            self.missing = [t for t in self.topics if t not in {tp.topic for tp in partitions}]
            self.consumer.assign(partitions)
            if partitions:
                self.ends = await captured_ends(self.consumer, partitions)
                self.starts = {
                    tp: int(offset)
                    for tp, offset in (await self.consumer.beginning_offsets(partitions)).items()
                }
        except BaseException:
            await self.consumer.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()

    @property
    def total(self) -> int:
        """How many records lie between the starts and the captured ends (for progress)."""
        return sum(max(end - self.starts.get(tp, 0), 0) for tp, end in self.ends.items())

    async def letters(self, max_records: int = 500) -> AsyncIterator[DeadLetter]:
        """Every record up to the captured ends, partition by partition in offset order."""
        remaining = {tp for tp, end in self.ends.items() if end > self.starts.get(tp, 0)}
        for tp in remaining:
            self.consumer.seek(tp, self.starts.get(tp, 0))
        last_progress = time.monotonic()
        while remaining:
            batches: Mapping[
                TopicPartition, list[ConsumerRecord[bytes, bytes]]
            ] = await self.consumer.getmany(
                *remaining, timeout_ms=FETCH_WAIT_MS, max_records=max_records
            )
            for tp, records in batches.items():
                end = self.ends[tp]
                for record in records:
                    if record.offset >= end:
                        break
                    yield DeadLetter.from_record(record)
            finished = {tp for tp in remaining if await self.consumer.position(tp) >= self.ends[tp]}
            if batches or finished:
                last_progress = time.monotonic()
            elif time.monotonic() - last_progress > STALL_TIMEOUT_S:
                names = ", ".join(f"{tp.topic}/{tp.partition}" for tp in sorted(remaining))
                raise DeadLetterReadError(
                    f"no records from {names} for {STALL_TIMEOUT_S:.0f} s before the end "
                    "offsets captured at start; is the broker reachable?"
                )
            if finished:
                self.consumer.pause(*finished)
            remaining -= finished


@dataclass(frozen=True)
class DeadLetterCounts:
    """How many dead letters each input topic holds, by kind."""

    by_topic: dict[str, dict[str, int]]  # source topic -> kind -> count
    missing: list[str]  # .dlq topics the broker does not have yet

    def total(self, topic: str) -> int:
        return sum(self.by_topic.get(topic, {}).values())


async def count_dead_letters(
    settings: ResolvedSettings, specs: Iterable[TopicSpec] = INPUT_TOPICS
) -> DeadLetterCounts:
    """Read every `.dlq` topic of `specs` once, to the ends captured at start, and count."""
    sources = {spec.dlq_name: spec.name for spec in specs}
    by_topic: dict[str, dict[str, int]] = {name: {} for name in sources.values()}
    async with DeadLetterReader(settings, sources) as reader:
        async for letter in reader.letters():
            kinds = by_topic[sources[letter.topic]]
            kinds[letter.kind] = kinds.get(letter.kind, 0) + 1
        missing = reader.missing
    return DeadLetterCounts(by_topic, missing)
