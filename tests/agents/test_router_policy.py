"""The routing policy: model choice, free images, budgets, estimates, rationale, settlements."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from agents.router.policy import (
    Budget,
    PolicyConfig,
    Rejection,
    Route,
    UserLedger,
    complexity,
    decide,
    estimate_tokens,
    settle,
)
from schemas.events import AIRequest, AIResponse, Lane, Refusal, RefusalKind, RouterSettlement
from schemas.examples import example
from schemas.model_catalog import ModelCatalog, load_catalog

NOW = datetime(2026, 11, 27, 14, 0, tzinfo=UTC)
CATALOG = load_catalog()
BOTH = frozenset({"openrouter", "gemini"})
FREE_IMAGE = "google/gemini-2.5-flash-image-preview:free"


def request(**fields: Any) -> AIRequest:
    return example(AIRequest, **{"user_tier": "free", "priority": "normal", **fields})


def route(
    req: AIRequest,
    ledger: UserLedger | None = None,
    budget: Budget | None = None,
    now: datetime = NOW,
    **config: Any,
) -> Route:
    outcome = decide(
        req,
        ledger or UserLedger(),
        budget,
        now=now,
        catalog=CATALOG,
        config=PolicyConfig(services=config.pop("services", BOTH), **config),
    )
    assert isinstance(outcome, Route), outcome
    return outcome


def reject(req: AIRequest, ledger: UserLedger | None = None, **config: Any) -> Rejection:
    budget = config.pop("budget", None)
    outcome = decide(
        req,
        ledger or UserLedger(),
        budget,
        now=NOW,
        catalog=CATALOG,
        config=PolicyConfig(services=config.pop("services", BOTH), **config),
    )
    assert isinstance(outcome, Rejection), outcome
    return outcome


def models(outcome: Route) -> list[str]:
    return [c.model for c in outcome.chain]


def test_complexity_score_counts_size_structure_cues_and_hints() -> None:
    assert complexity(request(prompt="Hi there")).score == 0
    assert complexity(request(prompt="x" * 900)).score == 1
    assert complexity(request(prompt="x" * 5000)).score == 2
    assert complexity(request(prompt="x" * 20000)).score == 3
    structured = complexity(request(prompt="Why? And how?\n```code```"))
    assert structured.score == 2 and "structured" in structured.reasons
    assert "reasoning cue" in structured.reasons
    assert complexity(request(prompt="x" * 5000, model_hint="cheap")).score == 0
    assert complexity(request(prompt="Hi", model_hint="reasoning")).score == 2
    assert (
        complexity(request(prompt="x" * 20000 + " step by step? why?", model_hint="pro")).score == 6
    )


def test_simple_low_urgency_text_takes_flash_lite_and_defers() -> None:
    outcome = route(request(prompt="Describe the tavern.", priority="low"))
    assert models(outcome)[0] == "gemini-2.5-flash-lite"
    assert outcome.lane is Lane.DEFERRED
    assert outcome.chain[-1].free_tier, "a free text model ends the chain"


@pytest.mark.parametrize(("priority", "lane"), [("urgent", Lane.URGENT), ("high", Lane.URGENT)])
def test_high_priority_text_takes_flash_in_the_urgent_lane(priority: str, lane: Lane) -> None:
    outcome = route(request(prompt="Describe the tavern.", priority=priority))
    assert models(outcome)[:2] == ["gemini-2.5-flash", "gemini-2.5-flash-lite"]
    assert outcome.lane is lane
    assert "priority" in outcome.rationale


def test_premium_users_get_at_least_flash_and_pro_for_complex_prompts() -> None:
    simple = route(request(prompt="Hi", user_tier="premium"))
    assert models(simple)[0] == "gemini-2.5-flash"
    hard = route(request(prompt="x" * 5000 + " Analyze step by step? why?", user_tier="premium"))
    assert models(hard)[:3] == ["gemini-2.5-pro", "gemini-2.5-flash", "gemini-2.5-flash-lite"]


def test_free_tier_is_capped_at_flash_even_when_complex_or_hinted() -> None:
    outcome = route(request(prompt="x" * 5000 + " Analyze step by step? why?"))
    assert models(outcome)[0] == "gemini-2.5-flash"
    hinted = route(request(prompt="Hi", model_hint="gemini-2.5-pro"))
    assert "gemini-2.5-pro" not in models(hinted)


def test_a_hint_naming_a_model_picks_it() -> None:
    outcome = route(request(prompt="Hi", user_tier="premium", model_hint="gemini-2.5-pro"))
    assert models(outcome)[0] == "gemini-2.5-pro"


def test_estimate_is_the_catalog_price_of_prompt_and_capped_output() -> None:
    req = request(prompt="x" * 400, priority="urgent")
    outcome = route(req, max_output_tokens=1000)
    flash = CATALOG.get("gemini", "gemini-2.5-flash")
    assert outcome.estimated_cost_usd == flash.cost(estimate_tokens(req.prompt), 1000, 0)
    assert outcome.estimated_cost_usd == Decimal("0.00253")
    assert "est 0.00253" in outcome.rationale


def test_images_go_free_until_the_daily_quota_is_used_then_paid() -> None:
    ledger = UserLedger()
    for n in range(1, 4):
        outcome = route(request(kind="image"), ledger, free_images_per_day=3)
        assert models(outcome) == [FREE_IMAGE, "gemini-2.5-flash-image"]
        assert outcome.free_slot_day == NOW.date()
        assert f"free image {n}/3 today" in outcome.rationale
        ledger = outcome.ledger
    fourth = route(request(kind="image"), ledger, free_images_per_day=3)
    assert models(fourth) == ["gemini-2.5-flash-image"]
    assert fourth.free_slot_day is None
    assert fourth.estimated_cost_usd == CATALOG.price("gemini", "gemini-2.5-flash-image", 7, 0, 1)
    assert "free images used up (3/3 today)" in fourth.rationale


def test_the_free_image_quota_is_per_utc_day() -> None:
    ledger = UserLedger(day=NOW.date(), free_images_used=1000, month=date(2026, 11, 1))
    tomorrow = NOW + timedelta(days=1)
    outcome = route(request(kind="image"), ledger, now=tomorrow.replace(hour=0, minute=0))
    assert outcome.chain[0].free_tier
    assert outcome.ledger.free_images_used == 1
    late = route(request(kind="image"), ledger, now=NOW.replace(hour=23, minute=59))
    assert not late.chain[0].free_tier


def test_budget_counts_router_commitments_so_concurrent_requests_cannot_overspend() -> None:
    """The aggregator still reports 0 spent; the router's own commitments stop the spend."""
    budget = Budget(month=date(2026, 11, 1), budget_usd=Decimal("0.006"), spent_usd=Decimal(0))
    ledger = UserLedger()
    chosen = []
    for _ in range(3):
        outcome = route(request(prompt="Hi", priority="urgent"), ledger, budget)
        chosen.append(outcome.chain[0].model)
        ledger = outcome.ledger
    # flash est 0.0025005 twice fits 0.006; the third would not: downgraded.
    assert chosen[:2] == ["gemini-2.5-flash", "gemini-2.5-flash"]
    assert chosen[2] != "gemini-2.5-flash"
    assert ledger.committed_usd <= Decimal("0.006")


def test_over_budget_reject_mode_answers_with_a_clear_error() -> None:
    budget = Budget(month=None, budget_usd=Decimal("1"), spent_usd=Decimal("1"))
    rejection = reject(request(prompt="Hi", priority="urgent"), budget=budget, over_budget="reject")
    assert "over budget" in rejection.error and "budget left 0 USD" in rejection.error


def test_over_budget_downgrade_takes_the_cheapest_model_that_fits() -> None:
    budget = Budget(month=None, budget_usd=Decimal("1"), spent_usd=Decimal("0.9995"))
    outcome = route(request(prompt="Hi", priority="urgent"), budget=budget)
    assert models(outcome)[0] == "gemini-2.5-flash-lite"
    assert "downgraded to gemini-2.5-flash-lite" in outcome.rationale
    spent = Budget(month=None, budget_usd=Decimal("1"), spent_usd=Decimal("1"))
    free = route(request(prompt="Hi", priority="urgent"), budget=spent)
    assert free.chain[0].free_tier and free.estimated_cost_usd == 0


def test_images_over_budget_use_only_free_slots_then_are_rejected() -> None:
    spent = Budget(month=None, budget_usd=Decimal("1"), spent_usd=Decimal("1"))
    outcome = route(request(kind="image"), budget=spent)
    assert models(outcome) == [FREE_IMAGE]
    used_up = UserLedger(day=NOW.date(), free_images_used=1000, month=date(2026, 11, 1))
    rejection = reject(request(kind="image"), used_up, budget=spent)
    assert "no free images left today" in rejection.error


def test_max_cost_per_request_is_respected() -> None:
    outcome = route(request(prompt="Hi", priority="urgent", max_cost_usd="0.001"))
    assert models(outcome)[0] == "gemini-2.5-flash-lite"


def test_a_budget_reported_for_an_earlier_month_does_not_count_its_spend() -> None:
    old = Budget(month=date(2026, 10, 1), budget_usd=Decimal("1"), spent_usd=Decimal("1"))
    outcome = route(request(prompt="Hi", priority="urgent"), budget=old)
    assert models(outcome)[0] == "gemini-2.5-flash"


def test_default_budget_applies_when_none_is_reported() -> None:
    rejection = reject(
        request(prompt="Hi", priority="urgent"),
        default_budget_usd=Decimal(0),
        over_budget="reject",
    )
    assert "over budget" in rejection.error


def test_only_configured_services_are_routed_to() -> None:
    outcome = route(request(kind="image"), services=frozenset({"gemini"}))
    assert models(outcome) == ["gemini-2.5-flash-image"]
    assert outcome.ledger.free_images_used == 0, "no free slot is reserved without OpenRouter"
    nothing = reject(request(kind="image"), services=frozenset())
    assert "no configured provider" in nothing.error


def test_rationale_fits_the_response_field() -> None:
    outcome = route(request(prompt="x" * 30000 + " why? how? step by step", user_tier="premium"))
    assert 0 < len(outcome.rationale) <= 500


def test_ledger_round_trips_through_its_table_encoding() -> None:
    ledger = UserLedger(NOW.date(), 17, date(2026, 11, 1), Decimal("0.000000123456"))
    assert UserLedger.loads(ledger.dumps()) == ledger
    assert UserLedger.loads(None) == UserLedger()


def _settlement(released: date | None, estimated: str, actual: str) -> RouterSettlement:
    response = example(AIResponse, completed_at=NOW)
    return RouterSettlement(
        request_id=response.request_id,
        user_id=response.user_id,
        response=response,
        estimated_cost_usd=Decimal(estimated),
        actual_cost_usd=Decimal(actual),
        released_free_slot_day=released,
    )


def test_settlement_gives_back_the_free_slot_and_trues_up_the_spend() -> None:
    ledger = UserLedger(NOW.date(), 5, date(2026, 11, 1), Decimal("0.01"))
    settled = settle(ledger, _settlement(NOW.date(), "0", "0.039"), NOW)
    assert settled.free_images_used == 4
    assert settled.committed_usd == Decimal("0.049")
    cheaper = settle(ledger, _settlement(None, "0.0025", "0.0005"), NOW)
    assert cheaper.free_images_used == 5
    assert cheaper.committed_usd == Decimal("0.008")


def test_a_slot_of_an_earlier_day_is_not_given_back_today() -> None:
    ledger = UserLedger(NOW.date(), 5, date(2026, 11, 1), Decimal(0))
    yesterday = NOW.date() - timedelta(days=1)
    assert settle(ledger, _settlement(yesterday, "0", "0"), NOW).free_images_used == 5


# From NOW (2026-11-27 14:00 UTC): to UTC midnight, and to the first of December.
UNTIL_MIDNIGHT_S = 10 * 3600
UNTIL_DECEMBER_S = (3 * 24 + 10) * 3600
SPENT = Budget(month=None, budget_usd=Decimal("1"), spent_usd=Decimal("1"))
USED_UP = UserLedger(day=NOW.date(), free_images_used=1000, month=date(2026, 11, 1))


def test_over_the_monthly_budget_is_refused_until_the_month_turns() -> None:
    rejection = reject(request(prompt="Hi", priority="urgent"), budget=SPENT, over_budget="reject")
    assert rejection.refusal == Refusal(kind=RefusalKind.BUDGET, retry_after_s=UNTIL_DECEMBER_S)


def test_over_the_requests_own_cost_limit_is_refused_with_no_wait() -> None:
    """Waiting for the month to turn would not help: the request's max_cost_usd is the limit."""
    tiny = request(prompt="Hi", priority="urgent", max_cost_usd="0.000000000001")
    rejection = reject(tiny, over_budget="reject")
    assert rejection.refusal == Refusal(kind=RefusalKind.COST_LIMIT)


def test_free_images_used_up_are_refused_until_utc_midnight() -> None:
    rejection = reject(request(kind="image"), USED_UP, budget=SPENT)
    assert rejection.refusal == Refusal(kind=RefusalKind.QUOTA, retry_after_s=UNTIL_MIDNIGHT_S)


def test_paid_images_over_budget_without_a_free_model_wait_for_the_month() -> None:
    rejection = reject(request(kind="image"), budget=SPENT, services=frozenset({"gemini"}))
    assert rejection.refusal == Refusal(kind=RefusalKind.BUDGET, retry_after_s=UNTIL_DECEMBER_S)


def test_no_configured_provider_is_unavailable() -> None:
    rejection = reject(request(kind="image"), services=frozenset())
    assert rejection.refusal == Refusal(kind=RefusalKind.UNAVAILABLE)


def test_no_model_open_to_the_tier_is_a_tier_refusal() -> None:
    pro_only = ModelCatalog(
        CATALOG.version, tuple(m for m in CATALOG.models if m.model == "gemini-2.5-pro")
    )
    outcome = decide(
        request(prompt="Hi", user_tier="free"),
        UserLedger(),
        None,
        now=NOW,
        catalog=pro_only,
        config=PolicyConfig(services=BOTH),
    )
    assert isinstance(outcome, Rejection), outcome
    assert outcome.refusal == Refusal(kind=RefusalKind.TIER)
