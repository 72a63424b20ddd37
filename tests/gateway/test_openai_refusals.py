"""How the OpenAI-compatible API turns a conversation into a prompt and the router's answers into
OpenAI's error statuses."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from agents.router.policy import PolicyConfig, Rejection, UserLedger, decide
from schemas.events import AIRequest, AIResponse, Priority, RequestKind, ResponseStatus, UserTier
from schemas.model_catalog import load_catalog
from scribe.gateway.openai_api import ApiError, chat_prompt, refusal

NOW = datetime.now(UTC)
DEADLINE = NOW + timedelta(seconds=30)


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
    assert refusal(_answer(ResponseStatus.OK, None), DEADLINE) is None


def test_router_budget_rejection_is_429_until_the_month_turns() -> None:
    """The router's own over-budget rejection, from the policy, maps to a quota 429."""
    ai_request = AIRequest(
        request_id="r-1",
        user_id="u-1",
        kind=RequestKind.TEXT,
        priority=Priority.NORMAL,
        prompt="hello",
        user_tier=UserTier.PREMIUM,
        created_at=NOW,
        max_cost_usd=Decimal("0.000000000001"),
        model_hint="gemini-2.5-pro",
    )
    outcome = decide(
        ai_request,
        UserLedger(),
        None,
        now=NOW,
        catalog=load_catalog(),
        config=PolicyConfig(services=frozenset({"gemini"}), over_budget="reject"),
    )
    assert isinstance(outcome, Rejection), outcome
    mapped = refusal(_answer(ResponseStatus.REJECTED, outcome.error), DEADLINE)
    assert mapped is not None and mapped.status == 429 and mapped.code == "budget_exceeded"
    retry_after = int(mapped.headers["Retry-After"])
    assert 0 < retry_after <= 31 * 24 * 3600


@pytest.mark.parametrize(
    ("status", "error", "at", "expected"),
    [
        (ResponseStatus.REJECTED, "no free images left today and ...", NOW, 429),
        (ResponseStatus.REJECTED, "no configured provider serves text requests", NOW, 503),
        (ResponseStatus.REJECTED, "no text model is open to this user's tier", NOW, 403),
        (ResponseStatus.FAILED, "no model could serve the request: x: 500", NOW, 502),
        (ResponseStatus.FAILED, "no model could serve the request: x: deadline reached", NOW, 504),
        (ResponseStatus.FAILED, "no model could serve", DEADLINE + timedelta(seconds=1), 504),
    ],
)
def test_refusals_map_to_openai_statuses(
    status: ResponseStatus, error: str, at: datetime, expected: int
) -> None:
    mapped = refusal(_answer(status, error, at), DEADLINE)
    assert mapped is not None and mapped.status == expected and mapped.message == error
    if expected == 429:
        assert int(mapped.headers["Retry-After"]) <= 24 * 3600
