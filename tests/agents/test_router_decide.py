"""The decide step over plain mappings (Faust tables in the worker): idempotent replay,
duplicates waiting for an answer in flight, settlements applied once, the window."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from agents.router.budget_state import BudgetBook
from agents.router.decide import Decider, Emit
from agents.router.policy import PolicyConfig, UserLedger
from schemas import decode
from schemas.events import (
    AIRequest,
    AIResponse,
    ResponseStatus,
    RoutedRequest,
    RouterSettlement,
)
from schemas.examples import example
from schemas.model_catalog import load_catalog
from topics.catalog import AI_LANE_DEFERRED, AI_LANE_URGENT, AI_RESPONSES

NOW = datetime(2026, 11, 27, 14, 0, tzinfo=UTC)
WINDOW_S = 600


def decider(budgets: BudgetBook | None = None, **config: Any) -> Decider:
    return Decider(
        {},
        {},
        budgets or BudgetBook(),
        load_catalog(),
        config=PolicyConfig(services=frozenset({"openrouter", "gemini"}), **config),
        idempotency_window_s=WINDOW_S,
    )


def image_request(**fields: Any) -> AIRequest:
    return example(AIRequest, kind="image", priority="urgent", **fields)


def settlement_for(emit: Emit, released: bool = False) -> RouterSettlement:
    routed = decode(emit.value, RoutedRequest)
    response = AIResponse(
        request_id=routed.request.request_id,
        user_id=routed.request.user_id,
        status=ResponseStatus.OK,
        completed_at=NOW,
        model="m",
        provider="gemini",
        output="done",
        cost_usd=Decimal("0.039"),
    )
    return RouterSettlement(
        request_id=response.request_id,
        user_id=response.user_id,
        response=response,
        estimated_cost_usd=routed.estimated_cost_usd,
        actual_cost_usd=Decimal("0.039") if released else routed.estimated_cost_usd,
        released_free_slot_day=routed.free_slot_day if released else None,
    )


def test_a_new_request_goes_to_its_lane_keyed_by_user() -> None:
    step = decider()
    [emit] = step.decide(image_request(user_id="u-1"), 0, NOW)
    assert emit.spec is AI_LANE_URGENT and emit.key == b"u-1"
    routed = decode(emit.value, RoutedRequest)
    assert routed.chain[0].free_tier and routed.free_slot_day == NOW.date()
    [low] = step.decide(example(AIRequest, priority="background"), 0, NOW)
    assert low.spec is AI_LANE_DEFERRED


def test_a_duplicate_in_flight_waits_and_gets_the_response_when_it_settles() -> None:
    step = decider()
    request = image_request()
    [routed] = step.decide(request, 0, NOW)
    assert step.decide(request, 0, NOW + timedelta(seconds=1)) == [], "not executed again"
    assert step.decide(request, 0, NOW + timedelta(seconds=2)) == []
    answers = step.settle(settlement_for(routed), 0, NOW + timedelta(seconds=3))
    assert len(answers) == 2 and all(a.spec is AI_RESPONSES for a in answers)
    assert decode(answers[0].value, AIResponse).output == "done"


def test_a_duplicate_after_the_answer_gets_the_same_response_again() -> None:
    step = decider()
    request = image_request()
    [routed] = step.decide(request, 0, NOW)
    step.settle(settlement_for(routed), 0, NOW)
    [replayed] = step.decide(request, 0, NOW + timedelta(seconds=WINDOW_S - 1))
    assert replayed.spec is AI_RESPONSES
    assert decode(replayed.value, AIResponse) == settlement_for(routed).response


def test_after_the_window_the_same_request_id_is_routed_again() -> None:
    step = decider()
    request = image_request()
    [routed] = step.decide(request, 0, NOW)
    step.settle(settlement_for(routed), 0, NOW)
    [again] = step.decide(request, 0, NOW + timedelta(seconds=WINDOW_S + 1))
    assert again.spec is AI_LANE_URGENT


def test_expired_request_ids_are_pruned_from_the_table() -> None:
    step = decider()
    for n in range(5):
        step.decide(image_request(request_id=f"old-{n}"), 2, NOW)
    step.decide(image_request(request_id="new"), 2, NOW + timedelta(seconds=WINDOW_S + 1))
    assert set(step.requests) == {b"new"}


def test_a_settlement_gives_back_the_free_slot_once_even_if_redelivered() -> None:
    step = decider(free_images_per_day=1000)
    request = image_request(user_id="u-9")
    [routed] = step.decide(request, 0, NOW)
    assert UserLedger.loads(step.users[b"u-9"]).free_images_used == 1
    settlement = settlement_for(routed, released=True)
    step.settle(settlement, 0, NOW)
    step.settle(settlement, 0, NOW)
    ledger = UserLedger.loads(step.users[b"u-9"])
    assert ledger.free_images_used == 0
    assert ledger.committed_usd == Decimal("0.039")


def test_a_rejection_is_answered_at_once_and_replayed_for_duplicates() -> None:
    budgets = BudgetBook()
    budgets.apply(b"u-broke", b'{"budget_usd": "0", "spent_usd": "0"}')
    step = decider(budgets, over_budget="reject")
    request = example(AIRequest, user_id="u-broke", priority="urgent")
    [answer] = step.decide(request, 0, NOW)
    response = decode(answer.value, AIResponse)
    assert answer.spec is AI_RESPONSES and response.status is ResponseStatus.REJECTED
    assert response.error is not None and "over budget" in response.error
    [replayed] = step.decide(request, 0, NOW)
    assert replayed.value == answer.value
