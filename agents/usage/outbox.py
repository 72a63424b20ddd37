"""Publishing the budget outbox: alert rows to `budget.alerts`, state rows to the compacted
`budget.state`. Used by the worker after each batch and on a timer, and by `scribe budget`,
each with its own producer; `BudgetStore.publish_pending` makes sure no two send one row."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from agents.usage.budget import alert_event, state_event
from runtime.metrics import BUDGET_ALERTS as ALERTS_PUBLISHED
from runtime.metrics import MESSAGES_OUT
from schemas import encode
from sinks.postgres.budgets import AlertRecord, BudgetStore, StateRecord
from topics.catalog import BUDGET_ALERTS, BUDGET_STATE
from topics.publisher import RawRecord

AGENT = "usage"  # the `agent` label: the CLI publishes on the flow's behalf too
SendAll = Callable[[list[RawRecord]], Awaitable[object]]


def outbox_records(
    alerts: Sequence[AlertRecord], states: Sequence[StateRecord], thresholds_pct: Sequence[int]
) -> list[RawRecord]:
    records: list[RawRecord] = [
        (BUDGET_ALERTS.name, a.user_id.encode(), encode(alert_event(a))) for a in alerts
    ]
    for s in states:
        state = state_event(s, thresholds_pct)
        records.append(
            (BUDGET_STATE.name, s.user_id.encode(), None if state is None else encode(state))
        )
    return records


def show_alert_thresholds(thresholds_pct: Sequence[int]) -> None:
    """Every threshold's alert count on /metrics from the start, at zero until an alert is
    published, so an alert rule or a panel reading one threshold has a series to read."""
    for pct in thresholds_pct:
        ALERTS_PUBLISHED.labels(threshold=str(pct))


async def publish_outbox(
    store: BudgetStore, send_all: SendAll, thresholds_pct: Sequence[int]
) -> tuple[int, int]:
    """Publish every pending alert and state; return (alerts, states) published."""

    async def deliver(alerts: Sequence[AlertRecord], states: Sequence[StateRecord]) -> None:
        await send_all(outbox_records(alerts, states, thresholds_pct))
        MESSAGES_OUT.labels(topic=BUDGET_ALERTS.name, agent=AGENT).inc(len(alerts))
        MESSAGES_OUT.labels(topic=BUDGET_STATE.name, agent=AGENT).inc(len(states))
        for alert in alerts:
            ALERTS_PUBLISHED.labels(threshold=str(alert.threshold_pct)).inc()

    return await store.publish_pending(deliver)
