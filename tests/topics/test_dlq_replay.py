"""What a replay adds to the message it sends back, and how it reports."""

from __future__ import annotations

from datetime import UTC, datetime

from topics.dlq_reader import DeadLetter
from topics.dlq_replay import (
    H_REPLAYED_AT,
    H_REPLAYED_FROM,
    Progress,
    ReplayCounts,
    message_digest,
    replay_headers,
)


def test_the_headers_say_which_dead_letter_was_replayed_and_when() -> None:
    letter = DeadLetter(
        "usage.events.dlq", 3, 17, b"k", b"v", "unpriced", "why", "usage.events", 1, 9, None, None
    )
    now = datetime(2026, 12, 4, 18, 0, tzinfo=UTC)
    assert dict(replay_headers(letter, now)) == {
        H_REPLAYED_FROM: b"usage.events.dlq/3/17",
        H_REPLAYED_AT: b"2026-12-04T18:00:00+00:00",
    }


def test_the_summary_counts_and_names_what_was_skipped() -> None:
    counts = ReplayCounts(total=10, read=10, matched=4, published=3, skipped_cut=1)
    assert counts.summary(dry_run=False).startswith("read 10, matched 4, published 3, skipped 1")
    assert "would publish 3" in counts.summary(dry_run=True)
    assert "skipped" not in ReplayCounts(read=2, matched=1, published=1).summary(False)


def test_progress_reports_every_n_records() -> None:
    reports: list[int] = []
    progress = Progress(lambda c: reports.append(c.read), every_records=100, every_s=3600)
    counts = ReplayCounts()
    for _ in range(350):
        counts.read += 1
        progress.tick(counts)
    assert reports == [100, 200, 300]


def test_a_message_is_known_by_its_key_and_bytes() -> None:
    assert message_digest(b"k", b"v") == message_digest(b"k", b"v")
    distinct = {
        message_digest(key, value)
        for key, value in [
            (b"k", b"v"),
            (b"k", b"w"),
            (None, b"v"),
            (b"", b"v"),
            (b"k", None),
            (b"kv", b""),
            (b"k", b""),
        ]
    }
    assert len(distinct) == 7


def test_the_summary_says_what_was_not_sent_twice() -> None:
    counts = ReplayCounts(read=5, matched=5, published=3, duplicates=2)
    assert counts.summary(dry_run=False) == (
        "read 5, matched 5, published 3, 2 not sent again (same key and bytes as one sent before)"
    )
