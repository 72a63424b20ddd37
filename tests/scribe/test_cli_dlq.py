"""`scribe dlq`: original bytes rendered safely for a terminal, and the counts table."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import orjson
from click.testing import CliRunner

from scribe.cli import main
from scribe.cli.dlq import (
    counts_json,
    counts_table,
    describe_letter,
    letter_json,
    render_bytes,
    terminal_safe,
)
from topics.dlq_reader import DeadLetter, DeadLetterCounts


def letter(
    value: bytes | None, reason: str = "why", original_size: int | None = None
) -> DeadLetter:
    return DeadLetter(
        "usage.events.dlq",
        0,
        5,
        b"u-\x1b[31m",
        value,
        "schema",
        reason,
        "usage.events",
        2,
        99,
        datetime(2026, 12, 4, 18, 0, tzinfo=UTC),
        original_size,
    )


def test_printable_utf8_is_shown_as_text() -> None:
    assert render_bytes('{"model":"gpt-😀-אב"}'.encode()) == ('{"model":"gpt-😀-אב"}', [])


def test_control_format_and_separator_characters_are_escaped() -> None:
    raw = "a\x00b\x1b[2Jc\u202ed\u200be\u2028f\ng\th".encode()
    shown, notes = render_bytes(raw)
    assert shown == "a\\x00b\\x1b[2Jc\\u202ed\\u200be\\u2028f\\ng\\th"
    assert notes == ["non-printable characters escaped"]
    assert terminal_safe("\x7f\x85") == "\\x7f\\x85"


def test_bytes_that_are_not_utf8_are_base64() -> None:
    raw = b"\xff\xfe{\x00}"
    shown, notes = render_bytes(raw)
    assert base64.b64decode(shown) == raw
    assert notes == ["not UTF-8: 5 bytes as base64"]


def test_long_values_are_cut_with_a_note() -> None:
    shown, notes = render_bytes(("é" * 30).encode(), limit=10)
    assert shown == "é" * 10
    assert notes == ["truncated: first 10 of 30 characters (60 bytes)"]
    binary, binary_notes = render_bytes(b"\xff" * 40, limit=8)
    assert base64.b64decode(binary) == b"\xff" * 8
    assert binary_notes[-1] == "truncated: first 8 of 40 bytes"


def test_tombstones_and_empty_values_say_so() -> None:
    assert render_bytes(None)[0] == "(none)"
    assert render_bytes(b"") == ("(empty)", [])


def test_a_dead_letter_prints_no_raw_control_character_anywhere() -> None:
    block = describe_letter(letter(b"\x00\x07", reason="bad \x1b]0;owned\x07 input"))
    assert all(ch.isprintable() or ch == "\n" for ch in block)
    assert "usage.events.dlq/0/5  kind schema  failed at 2026-12-04T18:00:00+00:00" in block
    assert "source  usage.events/2/99" in block
    assert "reason  bad \\x1b]0;owned\\x07 input" in block
    assert "key     u-\\x1b[31m" in block


def test_a_cut_dead_letter_says_it_holds_only_the_start() -> None:
    block = describe_letter(letter(b"x" * 10, original_size=2_000_000))
    assert "the DLQ holds only the start of a 2,000,000-byte message" in block


def test_json_keeps_the_exact_bytes() -> None:
    shown = letter_json(letter(b"\xff\x00"))
    assert base64.b64decode(shown["value_base64"]) == b"\xff\x00"
    assert shown["value_text"] is None
    assert shown["key_text"] == "u-\x1b[31m"  # JSON escapes it: orjson writes \u001b
    assert b"\\u001b" in orjson.dumps(shown)


def test_counts_as_table_and_json() -> None:
    counts = DeadLetterCounts(
        {"usage.events": {"unpriced": 1200, "json": 3}, "world.ticks": {}, "ai.requests": {}},
        missing=["ai.requests.dlq"],
    )
    table = counts_table(counts).splitlines()
    assert table[0].split() == ["TOPIC", "KIND", "COUNT"]
    assert table[1].split() == ["usage.events.dlq", "json", "3"]
    assert table[2].split() == ["usage.events.dlq", "unpriced", "1,200"]
    assert table[3].split() == ["world.ticks.dlq", "-", "0"]
    assert "(topic not created yet)" in table[4]
    as_json = counts_json(counts)
    assert as_json["usage.events"] == {
        "dlq": "usage.events.dlq",
        "exists": True,
        "total": 1203,
        "kinds": {"json": 3, "unpriced": 1200},
    }
    assert as_json["ai.requests"]["exists"] is False


def test_a_topic_without_dead_letters_is_refused_before_any_connection() -> None:
    result = CliRunner().invoke(main, ["dlq", "show", "budget.alerts"])
    assert result.exit_code == 2
    assert "output topic" in result.output
    result = CliRunner().invoke(main, ["dlq", "replay", "usage.events", "--since", "soon"])
    assert result.exit_code == 2
    assert "ISO 8601" in result.output
