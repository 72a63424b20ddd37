"""`scribe costs report`: month-to-date cost by service and model, the projected month-end,
the free-tier share of image generation and recommendations with estimated savings."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import click

from scribe.cli.settings import resolved_settings

if TYPE_CHECKING:
    from agents.usage.report import CostReport


@click.group()
def costs() -> None:
    """Cost reports from the usage rollups and ledger."""


@costs.command("report")
@click.option("--user", help="One user's costs (default: every user).")
@click.option("--month", help="YYYY-MM (default: the current UTC month).")
@click.option("--json", "as_json", is_flag=True, help="Exact amounts as JSON decimal strings.")
def report(user: str | None, month: str | None, as_json: bool) -> None:
    """Month-to-date costs, projection, free-tier share and recommendations."""
    import orjson

    from agents.usage.report import (
        ReportPolicy,
        build_report,
        parse_month,
        render_text,
        report_json,
    )
    from schemas.model_catalog import load_catalog
    from sinks.postgres.costs import load_cost_inputs
    from sinks.postgres.databases import Databases
    from sinks.postgres.migrate import migrate

    now = datetime.now(UTC)
    try:
        first_day = parse_month(month) if month else now.date().replace(day=1)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--month") from None
    settings = resolved_settings()

    async def load() -> CostReport:
        # A write: always the primary.
        await migrate(settings.database_url, connect_options=settings.database_options)
        async with Databases.from_settings(settings, max_size=1) as databases:
            inputs = await databases.read(lambda pool: load_cost_inputs(pool, first_day, user))
        policy = ReportPolicy.from_settings(settings.base.usage)
        return build_report(inputs, load_catalog(), policy, now)

    result = asyncio.run(load())
    if as_json:
        click.echo(orjson.dumps(report_json(result), option=orjson.OPT_INDENT_2).decode())
    else:
        click.echo(render_text(result))
