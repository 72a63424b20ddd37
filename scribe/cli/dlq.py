"""`scribe dlq list | show | replay`: what the dead-letter topics hold, and sending it back to
its source topic once the cause is fixed. Every read goes from the beginning of a `.dlq`
topic to the end offsets captured when the command started."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import click

from runtime.security import Redactor
from scribe.cli.settings import resolved_settings

if TYPE_CHECKING:
    from runtime.settings import ResolvedSettings
    from topics.catalog import TopicSpec
    from topics.dlq_reader import DeadLetter, DeadLetterCounts, DeadLetterFilter

T = TypeVar("T")
VALUE_LIMIT = 1000  # characters (text) or bytes (binary) of an original message shown
KEY_LIMIT = 200
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def terminal_safe(text: str) -> str:
    """`text` with every character a terminal would act on or hide (controls, escape
    sequences, bidi overrides, zero-width and line separators) written as a visible escape."""
    return "".join(
        ch
        if ch.isprintable()
        else _ESCAPES.get(ch) or (f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")
        for ch in text
    )


def render_bytes(value: bytes | None, limit: int = VALUE_LIMIT) -> tuple[str, list[str]]:
    """The original bytes as something safe to print, and notes on how they are shown: UTF-8
    text when they are UTF-8 (non-printable characters escaped), else base64; cut at `limit`
    characters or bytes, with a note saying so."""
    if value is None:
        return "(none)", ["a record without a value (tombstone)"]
    if not value:
        return "(empty)", []
    notes: list[str] = []
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        shown = base64.b64encode(value[:limit]).decode("ascii")
        notes.append(f"not UTF-8: {len(value):,} bytes as base64")
        if len(value) > limit:
            notes.append(f"truncated: first {limit:,} of {len(value):,} bytes")
        return shown, notes
    cut = text[:limit]
    shown = terminal_safe(cut)
    if shown != cut:
        notes.append("non-printable characters escaped")
    if len(text) > limit:
        notes.append(
            f"truncated: first {limit:,} of {len(text):,} characters ({len(value):,} bytes)"
        )
    return shown, notes


def describe_letter(letter: DeadLetter, limit: int = VALUE_LIMIT) -> str:
    """A dead letter as a block of lines for a terminal; nothing in it is printed raw."""
    failed = letter.failed_at.isoformat() if letter.failed_at else "(unknown)"
    source = (
        f"{letter.source_topic}/{letter.source_partition}/{letter.source_offset}"
        if letter.source_partition is not None
        else letter.source_topic
    )
    key, _ = render_bytes(letter.key, KEY_LIMIT)
    value, notes = render_bytes(letter.value, limit)
    if letter.original_size is not None:
        notes.append(f"the DLQ holds only the start of a {letter.original_size:,}-byte message")
    lines = [
        f"{letter.address}  kind {terminal_safe(letter.kind)}  failed at {failed}",
        f"  source  {terminal_safe(source)}",
        f"  reason  {terminal_safe(letter.reason)}",
        f"  key     {key}",
        f"  value   {value}",
    ]
    lines += [f"          ({note})" for note in notes]
    return "\n".join(lines)


def letter_json(letter: DeadLetter) -> dict[str, Any]:
    """A dead letter as JSON: exact bytes as base64, plus the text when it is UTF-8."""

    def raw(data: bytes | None) -> str | None:
        return None if data is None else base64.b64encode(data).decode("ascii")

    def text(data: bytes | None) -> str | None:
        try:
            return None if data is None else data.decode("utf-8")
        except UnicodeDecodeError:
            return None

    return {
        "dlq": letter.address,
        "kind": letter.kind,
        "reason": letter.reason,
        "source_topic": letter.source_topic,
        "source_partition": letter.source_partition,
        "source_offset": letter.source_offset,
        "failed_at": letter.failed_at.isoformat() if letter.failed_at else None,
        "original_size": letter.original_size,
        "key_base64": raw(letter.key),
        "key_text": text(letter.key),
        "value_base64": raw(letter.value),
        "value_text": text(letter.value),
    }


def counts_table(counts: DeadLetterCounts) -> str:
    rows = [("TOPIC", "KIND", "COUNT")]
    for topic, kinds in counts.by_topic.items():
        dlq = f"{topic}.dlq"
        if dlq in counts.missing:
            rows.append((dlq, "(topic not created yet)", "0"))
        elif not kinds:
            rows.append((dlq, "-", "0"))
        for kind, count in sorted(kinds.items()):
            rows.append((dlq, terminal_safe(kind), f"{count:,}"))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return "\n".join(
        f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:>{widths[2]}}" for row in rows
    )


def counts_json(counts: DeadLetterCounts) -> dict[str, Any]:
    return {
        topic: {
            "dlq": f"{topic}.dlq",
            "exists": f"{topic}.dlq" not in counts.missing,
            "total": counts.total(topic),
            "kinds": dict(sorted(kinds.items())),
        }
        for topic, kinds in counts.by_topic.items()
    }


def _source(name: str) -> TopicSpec:
    from topics.dlq_reader import dead_letter_source

    try:
        return dead_letter_source(name)
    except LookupError as error:
        raise click.BadParameter(str(error), param_hint="TOPIC") from None


def _filter(kind: str | None, since: str | None) -> DeadLetterFilter:
    from topics.dlq_reader import DeadLetterFilter, parse_since

    try:
        moment = parse_since(since, datetime.now(UTC)) if since else None
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--since") from None
    return DeadLetterFilter(kind=kind, since=moment)


def _run(work: Callable[[ResolvedSettings], Coroutine[Any, Any, T]]) -> T:
    """Run against Kafka; an unreachable or failing broker is an error message, not a trace."""
    from aiokafka.errors import KafkaError

    from topics.dlq_reader import DeadLetterReadError

    settings = resolved_settings()
    try:
        return asyncio.run(work(settings))
    except (KafkaError, OSError, DeadLetterReadError) as error:
        reason = Redactor(settings.secrets).redact(f"{type(error).__name__}: {error}")
        raise click.ClickException(
            f"Kafka at {','.join(settings.bootstrap_servers)}: {reason}"
        ) from None


KIND_HELP = "Only this kind (the scribe-error-kind header: json, schema, size, unpriced, ...)."
SINCE_HELP = (
    "Only those that failed since then: an ISO 8601 time (UTC unless given) or 30m, 6h, 2d."
)


@click.group()
def dlq() -> None:
    """Dead letters: what could not be processed, with the reason; replay once fixed."""


@dlq.command("list")
@click.option("--json", "as_json", is_flag=True, help="Counts as JSON.")
def list_counts(as_json: bool) -> None:
    """Dead letters per input topic and kind."""
    import orjson

    from topics.dlq_reader import count_dead_letters

    counts = _run(count_dead_letters)
    if as_json:
        click.echo(orjson.dumps(counts_json(counts), option=orjson.OPT_INDENT_2).decode())
    else:
        click.echo(counts_table(counts))


@dlq.command("show")
@click.argument("topic")
@click.option("--kind", help=KIND_HELP)
@click.option("--since", help=SINCE_HELP)
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line, bytes exact.")
def show(topic: str, kind: str | None, since: str | None, limit: int, as_json: bool) -> None:
    """The first LIMIT dead letters of TOPIC (usage.events or usage.events.dlq), oldest
    first: reason, source partition and offset, failure time and the original message."""
    import orjson

    from topics.dlq_reader import DeadLetterReader

    spec = _source(topic)
    selection = _filter(kind, since)

    async def read(settings: ResolvedSettings) -> tuple[int, int]:
        shown = matched = 0
        async with DeadLetterReader(settings, [spec.dlq_name]) as reader:
            if reader.missing:
                raise click.ClickException(
                    f"{spec.dlq_name} does not exist yet (a worker creates it at start-up)"
                )
            async for letter in reader.letters():
                if not selection.matches(letter):
                    continue
                matched += 1
                if shown < limit:
                    shown += 1
                    if as_json:
                        click.echo(orjson.dumps(letter_json(letter)).decode())
                    else:
                        click.echo(describe_letter(letter) + "\n")
        return shown, matched

    shown, matched = _run(read)
    click.echo(f"{shown} shown of {matched} matching in {spec.dlq_name}", err=True)


@dlq.command("replay")
@click.argument("topic")
@click.option("--kind", help=KIND_HELP)
@click.option("--since", help=SINCE_HELP)
@click.option("--dry-run", is_flag=True, help="Print what would be sent; send nothing.")
def replay_command(topic: str, kind: str | None, since: str | None, dry_run: bool) -> None:
    """Publish the matching dead letters of TOPIC back to TOPIC (original key and bytes, with
    scribe-replayed-from and scribe-replayed-at headers). Safe to repeat: every flow dedupes
    by its key (usage by event id). What fails again returns to the DLQ with its new reason."""
    from topics.dlq_replay import Progress, ReplayCounts, replay

    spec = _source(topic)
    selection = _filter(kind, since)

    def announce(letter: DeadLetter) -> None:
        if dry_run:
            size = "no value" if letter.value is None else f"{len(letter.value):,} bytes"
            click.echo(
                f"would publish {letter.address} -> {spec.name} (kind "
                f"{terminal_safe(letter.kind)}, key {render_bytes(letter.key, KEY_LIMIT)[0]}, "
                f"{size})"
            )

    def report(counts: ReplayCounts) -> None:
        click.echo(
            f"replay {spec.dlq_name}: read {counts.read:,} of {counts.total:,}, matched "
            f"{counts.matched:,}, published {counts.published:,}",
            err=True,
        )

    async def run(settings: ResolvedSettings) -> ReplayCounts:
        return await replay(
            settings,
            spec,
            selection,
            dry_run=dry_run,
            on_match=announce,
            progress=Progress(report),
        )

    counts = _run(run)
    click.echo(f"{spec.dlq_name} -> {spec.name}: {counts.summary(dry_run)}")
