"""With OpenRouter failing, image requests fall back to Gemini and the breaker opens (OpenRouter
is no longer called); when OpenRouter recovers, a half-open probe closes it. The free slots the
failed calls reserved were given back."""

from __future__ import annotations

import asyncio

import pytest

from agents.router.breaker import BreakerState
from tests.integration.router.conftest import BREAKER_COOLDOWN_S, Router, Simulator

pytestmark = pytest.mark.integration

FREE_IMAGE = "google/gemini-2.5-flash-image-preview:free"
OPEN, CLOSED = float(BreakerState.OPEN), float(BreakerState.CLOSED)


async def test_openrouter_failing_falls_back_to_gemini_and_the_breaker_opens_then_closes(
    router: Router, simulator: Simulator
) -> None:
    tag = router.tag()
    simulator.rules({"action": "500", "provider": "openrouter"})
    user = f"user-{tag}"

    async def image(n: int) -> str:
        request = router.request(
            tag, kind="image", priority="urgent", user_id=user, prompt=f"#{n} [tag:{tag}]"
        )
        await router.publish(request)
        [answer] = await router.responses({request.request_id})
        assert answer.status.value == "ok", answer
        return f"{answer.provider}/{answer.model}/{answer.free_tier}|{answer.rationale}"

    failing = [await image(n) for n in range(2)]  # 2 attempts each: 4 failures open it
    assert all(
        a.startswith("gemini/gemini-2.5-flash-image/False|served by fallback") for a in failing
    )
    breaker = {"provider": "openrouter", "model": FREE_IMAGE}
    assert router.metric("scribe_breaker_state", **breaker) == OPEN
    calls_while_open = len(simulator.calls(tag))
    for n in range(2, 5):
        assert (await image(n)).startswith("gemini/")
    assert [c["provider"] for c in simulator.calls(tag)[calls_while_open:]] == ["gemini"] * 3

    simulator.rules()  # OpenRouter recovers
    await asyncio.sleep(BREAKER_COOLDOWN_S)
    probe = await image(5)
    assert probe.startswith(f"openrouter/{FREE_IMAGE}/True|")
    assert router.metric("scribe_breaker_state", **breaker) == CLOSED
    # Every earlier request's free slot went back when its free call failed or was skipped.
    assert "free image 1/1000 today" in probe
    assert "free image 2/1000 today" in await image(6)
