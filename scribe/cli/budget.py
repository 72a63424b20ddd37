"""`scribe budget set | show | remove`: monthly budgets per user, stored in PostgreSQL.

Setting a budget records, in one transaction, the alerts it makes due at once and the new
budget state; both are then published (the worker's outbox sweep finishes the job if this
command is interrupted)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import TYPE_CHECKING, TypeVar

import click
from pydantic import TypeAdapter, ValidationError

from runtime.settings import ResolvedSettings
from schemas.fields import Identifier, Money
from scribe.cli.settings import resolved_settings

if TYPE_CHECKING:
    from sinks.postgres.budgets import BudgetStore

T = TypeVar("T")


def _user(value: str) -> str:
    try:
        return TypeAdapter(Identifier).validate_python(value)
    except ValidationError:
        raise click.BadParameter(
            f"{value!r}: a user id is 1-128 of A-Z a-z 0-9 . _ : @ / -", param_hint="USER"
        ) from None


def _usd(value: str) -> Decimal:
    try:
        amount = TypeAdapter(Money).validate_python(value)
    except ValidationError as error:
        reason = error.errors(include_url=False)[0]["msg"]
        raise click.BadParameter(f"{value!r}: {reason}", param_hint="USD") from None
    if amount <= 0:
        raise click.BadParameter("a budget must be above 0; use `remove` to drop it")
    return amount


def _plain(amount: Decimal) -> str:
    """12 stored decimal places without the trailing zeros: 0.001, not 0.001000000000."""
    return f"{amount.normalize():f}"


def _with_store(work: Callable[[BudgetStore, ResolvedSettings], Awaitable[T]]) -> T:
    import asyncpg

    from sinks.postgres.budgets import BudgetStore
    from sinks.postgres.migrate import migrate

    settings = resolved_settings()

    async def run() -> T:
        await migrate(settings.database_url, connect_options=settings.database_options)
        pool = await asyncpg.create_pool(
            settings.database_url, min_size=1, max_size=2, **settings.database_options
        )
        try:
            return await work(BudgetStore(pool), settings)
        finally:
            await pool.close()

    return asyncio.run(run())


async def _publish(store: BudgetStore, settings: ResolvedSettings) -> tuple[int, int]:
    from agents.usage.outbox import publish_outbox
    from topics.publisher import publisher_for

    async with publisher_for(settings) as publisher:
        return await publish_outbox(
            store, publisher.publish_raw, settings.base.usage.alert_thresholds_pct
        )


@click.group()
def budget() -> None:
    """Monthly budgets per user: alerts to budget.alerts, state to budget.state."""


@budget.command("set")
@click.argument("user")
@click.argument("usd")
def set_budget(user: str, usd: str) -> None:
    """Set USER's monthly budget to USD (e.g. 25 or 12.50)."""
    from agents.usage.budget import thresholds_reached

    user_id, amount = _user(user), _usd(usd)

    async def work(store: BudgetStore, settings: ResolvedSettings) -> None:
        thresholds = settings.base.usage.alert_thresholds_pct
        await store.set_budget(user_id, amount, thresholds)
        alerts, _ = await _publish(store, settings)
        (current,) = await store.budgets(user_id)
        reached = thresholds_reached(current.spent_usd, current.monthly_usd, thresholds)
        used = current.spent_usd / current.monthly_usd
        click.echo(
            f"budget for {user_id}: {_plain(current.monthly_usd)} USD per month; spent this "
            f"month {_plain(current.spent_usd)} USD ({used:.1%}); "
            f"thresholds reached: {', '.join(f'{p}%' for p in reached) or 'none'}"
        )
        if alerts:
            click.echo(f"published {alerts} budget alert(s) to budget.alerts")

    _with_store(work)


@budget.command("show")
@click.argument("user", required=False)
def show_budgets(user: str | None) -> None:
    """List budgets (or USER's) with this month's spend."""

    async def work(store: BudgetStore, settings: ResolvedSettings) -> None:
        rows = await store.budgets(_user(user) if user else None)
        if not rows:
            click.echo("no budgets set" if user is None else f"no budget for {user}")
            return
        click.echo(f"{'user':<32} {'budget USD':>16} {'spent USD':>20} {'used':>9}")
        for row in rows:
            used = row.spent_usd / row.monthly_usd
            click.echo(
                f"{row.user_id:<32} {_plain(row.monthly_usd):>16} {_plain(row.spent_usd):>20} "
                f"{used:>9.1%}"
            )

    _with_store(work)


@budget.command("remove")
@click.argument("user")
def remove_budget(user: str) -> None:
    """Drop USER's budget; the router sees a tombstone on budget.state."""
    user_id = _user(user)

    async def work(store: BudgetStore, settings: ResolvedSettings) -> bool:
        removed = await store.remove_budget(user_id)
        if removed:
            await _publish(store, settings)
        return removed

    if not _with_store(work):
        raise click.ClickException(f"no budget for {user_id}")
    click.echo(f"budget for {user_id} removed")
