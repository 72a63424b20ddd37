"""Send dead letters back to their source topic once the cause is fixed: the original key and
bytes, plus headers saying which dead letter was replayed and when. Safe to repeat, since every
flow dedupes by its key (a usage event by its id); a replayed message that fails again goes
back to the DLQ with its new reason, after the ends this replay reads to, so it is not read
again in the same run."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from runtime.kafka import producer as kafka_producer
from runtime.settings import ResolvedSettings
from topics.catalog import TopicSpec
from topics.dlq import DEAD_LETTER_REQUEST_BYTES
from topics.dlq_reader import DeadLetter, DeadLetterFilter, DeadLetterReader, DeadLetterReadError

# Header names on a replayed message; a consumer may use them to tell a replay from new input.
H_REPLAYED_FROM = "scribe-replayed-from"  # <dlq topic>/<partition>/<offset>
H_REPLAYED_AT = "scribe-replayed-at"
IN_FLIGHT = 500  # sends awaited together: bounds memory with 1 MiB dead letters
PROGRESS_EVERY_RECORDS = 10_000
PROGRESS_EVERY_S = 5.0


@dataclass
class ReplayCounts:
    total: int = 0  # records between the DLQ's start and the ends captured at start
    read: int = 0
    matched: int = 0
    published: int = 0
    skipped_cut: int = 0  # matched, but the DLQ holds only the start of the original message
    duplicates: int = 0  # matched, but the same key and bytes were already sent in this run

    def summary(self, dry_run: bool) -> str:
        sent = "would publish" if dry_run else "published"
        line = f"read {self.read}, matched {self.matched}, {sent} {self.published}"
        if self.duplicates:
            line += f", {self.duplicates} not sent again (same key and bytes as one sent before)"
        if self.skipped_cut:
            line += (
                f", skipped {self.skipped_cut} whose original was cut to fit the DLQ "
                "(only its start is stored; replaying it would send a different message)"
            )
        return line


def message_digest(key: bytes | None, value: bytes | None) -> bytes:
    """Identifies a message by its key and bytes (a missing key or value differs from an
    empty one)."""
    digest = hashlib.blake2b(digest_size=16)
    for part in (key, value):
        digest.update(b"-" if part is None else b"+%d:" % len(part) + part)
    return digest.digest()


def replay_headers(letter: DeadLetter, now: datetime) -> list[tuple[str, bytes]]:
    return [
        (H_REPLAYED_FROM, letter.address.encode()),
        (H_REPLAYED_AT, now.isoformat().encode()),
    ]


class Progress:
    """Calls `report` every `every_records` records read or `every_s` seconds, whichever
    comes first."""

    def __init__(
        self,
        report: Callable[[ReplayCounts], None],
        every_records: int = PROGRESS_EVERY_RECORDS,
        every_s: float = PROGRESS_EVERY_S,
    ) -> None:
        self.report = report
        self.every_records = every_records
        self.every_s = every_s
        self._last_read = 0
        self._last_at = time.monotonic()

    def tick(self, counts: ReplayCounts) -> None:
        now = time.monotonic()
        if (
            counts.read - self._last_read >= self.every_records
            or now - self._last_at >= self.every_s
        ):
            self.report(counts)
            self._last_read, self._last_at = counts.read, now


async def replay(
    settings: ResolvedSettings,
    spec: TopicSpec,
    selection: DeadLetterFilter,
    *,
    dry_run: bool = False,
    on_match: Callable[[DeadLetter], None] = lambda _: None,
    progress: Progress | None = None,
) -> ReplayCounts:
    """Publish every dead letter of `spec` that `selection` matches back to `spec`, reading
    its DLQ from the beginning to the end offsets captured at start; with `dry_run`, only
    `on_match` sees them. Returns once every publish is acknowledged.

    A message that failed again after an earlier replay is in the DLQ twice; it is sent once
    per run, so repeated replays of what still fails add one dead letter each, not double."""
    counts = ReplayCounts()
    sent: set[bytes] = set()
    async with DeadLetterReader(settings, [spec.dlq_name]) as reader:
        if reader.missing:
            raise DeadLetterReadError(
                f"{spec.dlq_name} does not exist yet (a worker creates it at start-up)"
            )
        counts.total = reader.total
        producer = (
            None
            if dry_run
            else kafka_producer(settings, max_request_size=DEAD_LETTER_REQUEST_BYTES, linger_ms=5)
        )
        if producer is not None:
            await producer.start()
        try:
            pending: list[asyncio.Future[Any]] = []
            async for letter in reader.letters():
                counts.read += 1
                if selection.matches(letter):
                    counts.matched += 1
                    digest = message_digest(letter.key, letter.value)
                    if letter.truncated:
                        counts.skipped_cut += 1
                    elif digest in sent:
                        counts.duplicates += 1
                    else:
                        sent.add(digest)
                        on_match(letter)
                        if producer is None:
                            counts.published += 1
                        else:
                            pending.append(
                                await producer.send(
                                    spec.name,
                                    letter.value,
                                    key=letter.key,
                                    headers=replay_headers(letter, datetime.now(UTC)),
                                )
                            )
                if len(pending) >= IN_FLIGHT:
                    counts.published += len(await asyncio.gather(*pending))
                    pending = []
                if progress is not None:
                    progress.tick(counts)
            counts.published += len(await asyncio.gather(*pending))
        finally:
            if producer is not None:
                await producer.stop()
    return counts
