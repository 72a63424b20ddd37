"""The `scribe` command: worker, publish, db here; stack and demo (developer tools) in `dev`;
each flow that adds commands puts them in a module of this package, registered at the bottom.
The command modules take their settings from `scribe.cli.settings`, never from this package,
so that nothing imports back up into it."""

from __future__ import annotations

import asyncio
import sys
from typing import TextIO

import click

from runtime.security import Redactor, mask_url
from schemas import DecodeError, decode
from schemas.events import Event
from scribe.cli.bench import bench
from scribe.cli.budget import budget
from scribe.cli.costs import costs
from scribe.cli.dev import demo, stack
from scribe.cli.dlq import dlq
from scribe.cli.gateway import gateway
from scribe.cli.loadgen import loadgen
from scribe.cli.settings import resolved_settings
from scribe.cli.world import world


@click.group()
def main() -> None:
    """Scribe: the stream-processing pipeline of the AI role-playing platform."""


@main.group()
def db() -> None:
    """PostgreSQL schema."""


@db.command("migrate")
def db_migrate() -> None:
    """Apply the SQL migrations not yet applied."""
    import asyncpg

    from sinks.postgres.migrate import migrate

    settings = resolved_settings()
    try:
        applied = asyncio.run(
            migrate(
                settings.database_url,
                report=click.echo,
                connect_options=settings.database_options,
            )
        )
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        where = mask_url(settings.database_url)
        reason = Redactor(settings.secrets).redact(f"{type(exc).__name__}: {exc}")
        raise click.ClickException(f"PostgreSQL at {where}: {reason}") from None
    click.echo(f"{len(applied)} migration(s) applied; the schema is up to date")


@main.command(context_settings={"ignore_unknown_options": True})
@click.option("--loglevel", default="info", show_default=True)
def worker(loglevel: str) -> None:
    """Run every flow in one worker; serves /metrics, /health and /ready on SCRIBE_WEB_PORT.
    SIGTERM stops it within 10 s (30 s when a server is unreachable), losing nothing."""
    import logging

    from runtime import tracing
    from runtime.event_loop import EventLoopUnavailableError, use_event_loop
    from runtime.logs import log_to_stderr
    from scribe.app import StoppingWorker, create_app, prepare
    from topics.admin import TopicLayoutError

    settings = resolved_settings()
    try:
        use_event_loop(settings.base.event_loop)
    except EventLoopUnavailableError as exc:
        raise click.ClickException(f"cannot start the worker: {exc}") from None
    # Until Faust sets up its own logging, so that what `prepare` reports is in the log's format.
    log_to_stderr(settings.base.log_format)
    tracing.configure("scribe-worker")
    try:
        asyncio.run(prepare(settings, report=logging.getLogger("scribe.worker").info))
    except TopicLayoutError as exc:
        raise click.ClickException(f"cannot start the worker: {exc}") from None
    app, resources = create_app(settings)
    StoppingWorker(app, resources, loglevel=loglevel).execute_from_commandline()


def read_events(lines: TextIO, model: type[Event]) -> tuple[list[Event], list[tuple[int, str]]]:
    """Each non-blank line one JSON event; rejects come back with their line numbers."""
    events: list[Event] = []
    rejects: list[tuple[int, str]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            events.append(decode(line, model))
        except DecodeError as exc:
            rejects.append((number, str(exc)))
    return events, rejects


@main.command()
@click.argument("topic")
@click.argument("source", type=click.File("r", encoding="utf-8"))
@click.option(
    "--skip-invalid",
    is_flag=True,
    help="Publish the valid lines even when some are rejected (the exit code is still 1).",
)
def publish(topic: str, source: TextIO, skip_invalid: bool) -> None:
    """Publish JSON lines from SOURCE (a file, or - for stdin) to TOPIC.

    Every line is validated against the topic's schema first. With any reject, nothing is
    published unless --skip-invalid is given; rejects are listed with their line numbers.
    """
    from topics.catalog import UnknownTopicError
    from topics.catalog import topic as find_topic
    from topics.publisher import publisher_for

    try:
        spec = find_topic(topic)
    except UnknownTopicError as exc:
        raise click.ClickException(str(exc)) from None
    events, rejects = read_events(source, spec.model)
    for number, reason in rejects:
        click.echo(f"{getattr(source, 'name', '-')}:{number}: rejected: {reason}", err=True)
    if rejects and not skip_invalid:
        click.echo(
            f"{len(rejects)} line(s) rejected; nothing published (use --skip-invalid to "
            "publish the valid lines)",
            err=True,
        )
        sys.exit(1)
    settings = resolved_settings()

    async def send() -> int:
        async with publisher_for(settings) as publisher:
            return await publisher.publish_many(events, spec)

    count = asyncio.run(send())
    click.echo(f"published {count} event(s) to {spec.name}")
    if rejects:
        sys.exit(1)


main.add_command(stack)
main.add_command(demo)
main.add_command(bench)
main.add_command(budget)
main.add_command(costs)
main.add_command(dlq)
main.add_command(gateway)
main.add_command(loadgen)
main.add_command(world)
