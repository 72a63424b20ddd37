"""`scribe loadgen`: a realistic mixed load at a target rate, with progress and a summary."""

from __future__ import annotations

import asyncio
import sys
import uuid

import click

from scribe.cli.dev import dev_tools
from scribe.cli.settings import resolved_settings


@click.command()
@click.option("--rate", type=float, default=1000, show_default=True, help="Events per second.")
@click.option("--seconds", type=float, default=30, show_default=True)
@click.option("--seed", type=int, default=7, show_default=True, help="Same seed, same load.")
@click.option("--users", type=int, default=10_000, show_default=True)
@click.option("--worlds", type=int, default=500, show_default=True)
@click.option(
    "--malformed",
    "malformed_share",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="Share of deliberately malformed messages (they go to the topics' .dlq).",
)
@click.option("--prefix", default="load-", show_default=True, help="Of user and world ids.")
@click.option("--run-id", default=None, help="In every event id; default: random per run.")
def loadgen(
    *,
    rate: float,
    seconds: float,
    seed: int,
    users: int,
    worlds: int,
    malformed_share: float,
    prefix: str,
    run_id: str | None,
) -> None:
    """Publish a mixed load (Zipf-like users and worlds; requests of every priority and kind;
    usage priced from the catalog; world events and ticks; bursts of invalidations) at RATE
    events/s for SECONDS, then print what was acknowledged per topic and the achieved rate."""
    from topics.admin import ensure_topics
    from topics.publisher import publisher_for

    with dev_tools():
        from devkit.loadgen.runner import Progress, run_load
        from devkit.loadgen.workload import Mix, Workload, WorkloadConfig

    if rate <= 0 or seconds <= 0:
        raise click.BadParameter("--rate and --seconds must be positive")
    settings = resolved_settings()
    config = WorkloadConfig(
        seed=seed,
        run_id=run_id or uuid.uuid4().hex[:8],
        prefix=prefix,
        users=users,
        worlds=worlds,
        mix=Mix(malformed=malformed_share),
    )

    async def run() -> int:
        await ensure_topics(settings)
        async with publisher_for(settings) as publisher:
            click.echo(
                f"loadgen: {rate:,.0f} events/s for {seconds:g} s, seed {seed}, run "
                f"{config.run_id}, idempotent producer: {'yes' if publisher.idempotent else 'no'}",
                err=True,
            )
            report = await run_load(publisher, Workload(config), rate, seconds, progress=Progress())
        for line in report.lines():
            click.echo(line)
        return 1 if report.failed else 0

    sys.exit(asyncio.run(run()))
