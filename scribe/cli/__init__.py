"""The `scribe` command: worker, publish, stack, db, demo. Each flow that adds commands puts
them in a module of this package and registers its group at the bottom of this file."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import TextIO

import click

from devkit.stack import BROKERS, LocalStack, StackError, settings_with_stack
from runtime.security import Redactor, mask_url
from runtime.settings import ResolvedSettings, Settings, SettingsError
from schemas import DecodeError, decode
from schemas.events import Event


def resolved_settings() -> ResolvedSettings:
    """The settings, with their secrets kept out of every log record from here on."""
    try:
        settings = settings_with_stack(Settings.from_env()).require()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None
    Redactor(settings.secrets).install()
    return settings


@click.group()
def main() -> None:
    """Scribe: the stream-processing pipeline of the AI role-playing platform."""


@main.group()
def stack() -> None:
    """The embedded local stack on loopback: Kafka protocol (Tansu), PostgreSQL, Redis and the
    CDN purge simulator."""


def _stack() -> LocalStack:
    return LocalStack.at(Settings.from_env().state_dir)


@stack.command("up")
@click.option(
    "--broker",
    type=click.Choice(BROKERS),
    default=None,
    help="tansu (the default: memory-only, from pip) or apache (Apache Kafka from Maven "
    "Central's jars: needs Java 17+ and Maven; durable, with transactions).",
)
def stack_up(broker: str | None) -> None:
    """Start what is not running; print the `export` lines that point the pipeline at it."""
    state_dir = Settings.from_env().state_dir
    try:
        local = LocalStack.at(state_dir) if broker is None else LocalStack(state_dir, broker)
        env = local.up(report=lambda line: click.echo(line, err=True))
    except StackError as exc:
        raise click.ClickException(str(exc)) from None
    for name, value in env.items():
        click.echo(f"export {name}={value}")


@stack.command("down")
def stack_down() -> None:
    """Stop exactly what `scribe stack up` started."""
    _stack().down(report=lambda line: click.echo(line, err=True))


@stack.command("status")
def stack_status() -> None:
    """Show each service, its URL and whether it runs; exit 1 unless all run."""
    statuses = _stack().status()
    if not statuses:
        click.echo("the embedded stack is not running")
        sys.exit(1)
    for status in statuses:
        state = "running" if status.running else "stopped"
        click.echo(f"{status.name:<12} {state:<8} pid {status.pid:<8} {status.url}")
    sys.exit(0 if all(s.running for s in statuses) else 1)


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
                connect_options=settings.base.security.postgres.asyncpg_kwargs(),
            )
        )
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        where = mask_url(settings.database_url)
        reason = Redactor(settings.secrets).redact(f"{type(exc).__name__}: {exc}")
        raise click.ClickException(f"PostgreSQL at {where}: {reason}") from None
    click.echo(f"{len(applied)} migration(s) applied; the schema is up to date")


async def prepare(settings: ResolvedSettings) -> None:
    """What a worker needs before it consumes: the catalog's topics and the schema."""
    from sinks.postgres.migrate import migrate
    from topics.admin import ensure_topics

    created = await ensure_topics(
        settings.bootstrap_servers,
        settings.base.topic_partitions,
        settings.base.topic_replication,
        client_options=settings.kafka_client_options,
    )
    if created:
        click.echo(f"created topics: {', '.join(created)}", err=True)
    await migrate(
        settings.database_url,
        report=lambda line: click.echo(line, err=True),
        connect_options=settings.base.security.postgres.asyncpg_kwargs(),
    )


@main.command(context_settings={"ignore_unknown_options": True})
@click.option("--loglevel", default="info", show_default=True)
def worker(loglevel: str) -> None:
    """Run every agent in one Faust worker; serves /metrics and /health on SCRIBE_WEB_PORT.
    SIGTERM stops it within 10 s (30 s when a server is unreachable), losing nothing."""
    from scribe.app import StoppingWorker, create_app

    settings = resolved_settings()
    asyncio.run(prepare(settings))
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


@main.command()
@click.option("--seconds", type=float, envvar="DEMO_SECONDS", default=60, show_default=True)
def demo(seconds: float) -> None:
    """Run a worker on the embedded stack (or SCRIBE_*_URL) under a mixed load, then summarize."""
    from devkit.demo import run_demo

    sys.exit(run_demo(seconds, Path.cwd()))


# Each flow's commands, registered here (imported last: they use the above).
from scribe.cli.bench import bench  # noqa: E402
from scribe.cli.budget import budget  # noqa: E402
from scribe.cli.costs import costs  # noqa: E402
from scribe.cli.gateway import gateway  # noqa: E402
from scribe.cli.loadgen import loadgen  # noqa: E402
from scribe.cli.world import world  # noqa: E402

main.add_command(bench)
main.add_command(budget)
main.add_command(costs)
main.add_command(gateway)
main.add_command(loadgen)
main.add_command(world)
