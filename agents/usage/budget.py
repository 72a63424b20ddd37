"""Budget arithmetic and the messages the router and people read. Pure: no I/O.

Which alerts are due is decided in the database (one row per user, month and threshold, in
the transaction that added the spend); this module says what those rows mean on the wire.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from schemas.events import BudgetAlert, BudgetState
from sinks.postgres.budgets import AlertRecord, StateRecord


def thresholds_reached(
    spent_usd: Decimal, budget_usd: Decimal, thresholds_pct: Sequence[int]
) -> list[int]:
    """The thresholds that `spent_usd` has reached: spent >= budget * pct / 100, exactly."""
    return sorted(p for p in thresholds_pct if spent_usd * 100 >= budget_usd * p)


def alert_id(record: AlertRecord) -> str:
    """Stable per database row, so a republished alert can be recognised downstream."""
    return f"budget-alert-{record.id}"


def alert_event(record: AlertRecord) -> BudgetAlert:
    return BudgetAlert(
        alert_id=alert_id(record),
        user_id=record.user_id,
        month=record.month,
        threshold_pct=record.threshold_pct,
        budget_usd=record.budget_usd,
        spent_usd=record.spent_usd,
        occurred_at=record.created_at,
    )


def state_event(record: StateRecord, thresholds_pct: Sequence[int]) -> BudgetState | None:
    """The state message; None for a removed budget (published as a tombstone)."""
    if record.budget_usd is None:
        return None
    budget, spent = record.budget_usd, record.spent_usd
    return BudgetState(
        user_id=record.user_id,
        month=record.month,
        budget_usd=budget,
        spent_usd=spent,
        remaining_usd=max(budget - spent, Decimal(0)),
        exhausted=spent >= budget,
        thresholds_reached=thresholds_reached(spent, budget, thresholds_pct),
        version=record.version,
        updated_at=record.updated_at,
    )
