"""How the OpenAI-compatible API turns a conversation into a prompt and the router's refusals
(the `refusal` field; the error text for routers older than it) into OpenAI's errors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from agents.router.policy import Budget, PolicyConfig, Rejection, UserLedger, decide
from schemas.events import (
    AIRequest,
    AIResponse,
    Priority,
    Refusal,
    RefusalKind,
    RequestKind,
    ResponseStatus,
    UserTier,
)
from schemas.model_catalog import load_catalog
from scribe.gateway.openai_api import ApiError, chat_prompt, refusal

NOW = datetime.now(UTC)
DEADLINE = NOW + timedelta(seconds=30)


def _mapped(response: AIResponse, deadline: datetime) -> ApiError | None:
    """The gateway's mapping as it runs at NOW, however long after import this test runs."""
    return refusal(response, deadline, now=NOW)


def _answer(status: ResponseStatus, error: str | None, at: datetime = NOW) -> AIResponse:
    return AIResponse(request_id="r-1", user_id="u-1", status=status, completed_at=at, error=error)


def test_a_lone_user_message_is_the_prompt_else_roles_are_kept() -> None:
    assert chat_prompt([{"role": "user", "content": "hi"}]) == "hi"
    assert (
        chat_prompt(
            [
                {"role": "system", "content": "be brief"},
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
                },
            ]
        )
        == "system: be brief\n\nuser: a\nb"
    )


@pytest.mark.parametrize(
    "messages",
    [[], "hi", [{"content": "x"}], [{"role": "user", "content": [{"type": "image_url"}]}]],
)
def test_bad_messages_are_400_naming_the_parameter(messages: object) -> None:
    with pytest.raises(ApiError) as bad:
        chat_prompt(messages)
    assert bad.value.status == 400 and bad.value.param and bad.value.param.startswith("messages")


def test_ok_is_no_refusal() -> None:
    assert _mapped(_answer(ResponseStatus.OK, None), DEADLINE) is None


def _refused(kind: RefusalKind, retry_after_s: int | None = None, at: datetime = NOW) -> AIResponse:
    status = ResponseStatus.REJECTED if kind in REJECTIONS else ResponseStatus.FAILED
    return AIResponse(
        request_id="r-1",
        user_id="u-1",
        status=status,
        completed_at=at,
        error="the router's words, not read",
        refusal=Refusal(kind=kind, retry_after_s=retry_after_s),
    )


REJECTIONS = {
    RefusalKind.BUDGET,
    RefusalKind.QUOTA,
    RefusalKind.COST_LIMIT,
    RefusalKind.TIER,
    RefusalKind.UNAVAILABLE,
}
EXPECTED = {
    RefusalKind.BUDGET: (429, "insufficient_quota", "budget_exceeded"),
    RefusalKind.QUOTA: (429, "insufficient_quota", "quota_exceeded"),
    RefusalKind.COST_LIMIT: (400, "invalid_request_error", "cost_limit_exceeded"),
    RefusalKind.TIER: (403, "permission_error", "tier_not_allowed"),
    RefusalKind.UNAVAILABLE: (503, "service_unavailable", "unavailable"),
    RefusalKind.RATE_LIMITED: (429, "rate_limit_exceeded", "provider_rate_limited"),
    RefusalKind.DEADLINE: (504, "timeout", "deadline_exceeded"),
    RefusalKind.PROVIDER_ERROR: (502, "api_error", "provider_error"),
    RefusalKind.INTERNAL: (500, "api_error", "internal_error"),
}


def test_every_kind_has_a_mapping() -> None:
    assert set(EXPECTED) == set(RefusalKind)


@pytest.mark.parametrize("kind", list(RefusalKind))
def test_each_kind_maps_to_its_status_type_and_code_whatever_the_text(kind: RefusalKind) -> None:
    mapped = _mapped(_refused(kind), DEADLINE)
    assert mapped is not None
    assert (mapped.status, mapped.type, mapped.code) == EXPECTED[kind]
    assert mapped.message == "the router's words, not read"
    # Only unavailable says when to retry without being told: the SDK then waits a second.
    assert mapped.headers == ({"Retry-After": "1"} if kind is RefusalKind.UNAVAILABLE else {})


@pytest.mark.parametrize("kind", list(RefusalKind))
def test_a_refusals_wait_is_the_retry_after(kind: RefusalKind) -> None:
    mapped = _mapped(_refused(kind, retry_after_s=3600), DEADLINE)
    assert mapped is not None and mapped.headers == {"Retry-After": "3600"}


def test_the_wait_counts_from_when_the_router_answered() -> None:
    answered = NOW - timedelta(seconds=10.5)
    late = _mapped(_refused(RefusalKind.BUDGET, 3600, at=answered), DEADLINE)
    assert late is not None and late.headers["Retry-After"] in {"3590", "3589"}
    long_ago = _mapped(_refused(RefusalKind.RATE_LIMITED, 5, at=answered), DEADLINE)
    assert long_ago is not None and long_ago.headers["Retry-After"] == "1"


def test_the_routers_budget_rejection_is_429_until_the_month_turns() -> None:
    """From the policy to the API: the refusal decide sets, mapped."""
    spent = Budget(month=None, budget_usd=Decimal("1"), spent_usd=Decimal("1"))
    outcome = decide(
        AIRequest(
            request_id="r-1",
            user_id="u-1",
            kind=RequestKind.TEXT,
            priority=Priority.NORMAL,
            prompt="hello",
            user_tier=UserTier.PREMIUM,
            created_at=NOW,
        ),
        UserLedger(),
        spent,
        now=NOW,
        catalog=load_catalog(),
        config=PolicyConfig(services=frozenset({"gemini"}), over_budget="reject"),
    )
    assert isinstance(outcome, Rejection), outcome
    answer = AIResponse(
        request_id="r-1",
        user_id="u-1",
        status=ResponseStatus.REJECTED,
        completed_at=NOW,
        error=outcome.error,
        refusal=outcome.refusal,
    )
    mapped = _mapped(answer, DEADLINE)
    assert mapped is not None and mapped.status == 429 and mapped.code == "budget_exceeded"
    retry_after = int(mapped.headers["Retry-After"])
    assert 0 < retry_after <= 31 * 24 * 3600


# Without `refusal` (a router older than the field): the kind is read from the error text.
@pytest.mark.parametrize(
    ("status", "error", "at", "expected"),
    [
        (ResponseStatus.REJECTED, "over budget: x would cost up to 1 USD", NOW, 429),
        (ResponseStatus.REJECTED, "no free images left today and ...", NOW, 429),
        (ResponseStatus.REJECTED, "no configured provider serves text requests", NOW, 503),
        (ResponseStatus.REJECTED, "no text model is open to this user's tier", NOW, 403),
        (ResponseStatus.REJECTED, "something else", NOW, 400),
        (ResponseStatus.FAILED, "no model could serve the request: x: 500", NOW, 502),
        (ResponseStatus.FAILED, "no model could serve the request: x: deadline reached", NOW, 504),
        (ResponseStatus.FAILED, "no model could serve", DEADLINE + timedelta(seconds=1), 504),
    ],
)
def test_an_old_routers_refusal_is_read_from_its_text(
    status: ResponseStatus, error: str, at: datetime, expected: int
) -> None:
    mapped = _mapped(_answer(status, error, at), DEADLINE)
    assert mapped is not None and mapped.status == expected and mapped.message == error
    if expected == 429:
        assert int(mapped.headers["Retry-After"]) <= 31 * 24 * 3600
