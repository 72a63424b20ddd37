"""The executor against the provider simulator over real HTTP and a real Redis: usage read from
the answers, keys resting after 429, retries within the deadline, fallbacks, breakers, free
slots given back, keys never shown."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp import web

from agents.router.breaker import BreakerConfig, Breakers, BreakerState
from agents.router.execute import (
    ExecuteConfig,
    Executor,
    Outcome,
    Upstream,
    failure_refusal,
    usage_event_id,
)
from agents.router.images import ImageStore
from agents.router.keys import KeyPool, key_id
from agents.router.lane_consumer import internal_failure
from agents.router.policy import PolicyConfig, Route, UserLedger, decide
from agents.router.providers import Gemini, OpenRouter
from devkit.stack.provider_simulator import ProviderSimulator, Rule
from schemas import encode
from schemas.events import AIRequest, Refusal, RefusalKind, ResponseStatus, RoutedRequest
from schemas.examples import example
from schemas.model_catalog import load_catalog

pytestmark = pytest.mark.integration

FREE_IMAGE = "google/gemini-2.5-flash-image-preview:free"


class Simulator:
    def __init__(self, url: str, server: ProviderSimulator) -> None:
        self.url = url
        self.server = server

    """Driven through its state: it runs in this test's event loop."""

    def rules(self, *rules: dict[str, Any]) -> None:
        self.server.state.rules = [Rule(**rule) for rule in rules]

    def calls(self) -> list[dict[str, Any]]:
        return [asdict(call) for call in self.server.state.calls]


@pytest.fixture
async def simulator() -> AsyncIterator[Simulator]:
    server = ProviderSimulator()
    runner = web.AppRunner(server.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield Simulator(f"http://127.0.0.1:{port}", server)
    finally:
        await runner.cleanup()


class Setup:
    def __init__(self, simulator: Simulator, redis_client: aioredis.Redis) -> None:
        run = uuid.uuid4().hex[:8]
        self.secrets = {
            "openrouter": tuple(f"or-secret-{run}-{i}" for i in range(3)),
            "gemini": tuple(f"gm-secret-{run}-{i}" for i in range(3)),
        }
        self.breakers = Breakers(BreakerConfig(failure_rate=0.5, min_calls=4, cooldown_s=0.5))
        self.upstreams = {
            "openrouter": Upstream(
                OpenRouter(simulator.url),
                KeyPool(redis_client, "openrouter", self.secrets["openrouter"], 10_000, 10**6),
            ),
            "gemini": Upstream(
                Gemini(simulator.url),
                KeyPool(redis_client, "gemini", self.secrets["gemini"], 10_000, 10**6),
            ),
        }
        self.images = ImageStore(redis_client, "http://127.0.0.1:1", 60)

    def executor(self, **config: Any) -> Executor:
        return Executor(
            self.upstreams,
            self.breakers,
            load_catalog(),
            self.images,
            ExecuteConfig(**{"backoff_base_s": 0.01, "call_timeout_s": 2.0, **config}),
            rng=random.Random(3),
        )

    def key_ids(self, service: str) -> list[str]:
        return [key_id(service, s) for s in self.secrets[service]]

    async def aclose(self) -> None:
        for upstream in self.upstreams.values():
            await upstream.provider.aclose()


@pytest.fixture
async def setup(simulator: Simulator, redis_client: aioredis.Redis) -> AsyncIterator[Setup]:
    made = Setup(simulator, redis_client)
    try:
        yield made
    finally:
        await made.aclose()


def routed(**fields: Any) -> RoutedRequest:
    tag = uuid.uuid4().hex[:10]
    fields.setdefault("prompt", f"Paint the harbour [tag:{tag}]")
    request = example(AIRequest, **{"priority": "urgent", **fields})
    outcome = decide(
        request,
        UserLedger(),
        None,
        now=datetime.now(UTC),
        catalog=load_catalog(),
        config=PolicyConfig(services=frozenset({"openrouter", "gemini"})),
    )
    assert isinstance(outcome, Route)
    return RoutedRequest(
        request=request,
        lane=outcome.lane,
        chain=list(outcome.chain),
        estimated_cost_usd=outcome.estimated_cost_usd,
        rationale=outcome.rationale,
        decided_at=datetime.now(UTC),
        free_slot_day=outcome.free_slot_day,
    )


def state(breaker: Any) -> BreakerState:
    """Read afresh (mypy would otherwise keep an earlier narrowing of the attribute)."""
    return BreakerState(breaker.state)


def assert_no_secret(outcome: Outcome, setup: Setup) -> None:
    text = b"".join(
        encode(e) for e in (outcome.response, outcome.settlement, outcome.usage) if e is not None
    )
    for secrets in setup.secrets.values():
        for secret in secrets:
            assert secret.encode() not in text


async def test_text_usage_comes_from_usage_metadata_priced_by_the_catalog(
    setup: Setup, simulator: Simulator
) -> None:
    outcome = await setup.executor().run(routed(kind="text"))
    response, usage = outcome.response, outcome.usage
    assert response.status is ResponseStatus.OK and response.provider == "gemini"
    assert response.model == "gemini-2.5-flash" and response.output
    assert usage is not None and usage.event_id == usage_event_id(response.request_id)
    [call] = simulator.calls()
    assert usage.key_id == call["key_id"] and usage.key_id in setup.key_ids("gemini")
    assert usage.input_tokens > 0 and usage.output_tokens > 0 and usage.images == 0
    price = load_catalog().price(
        "gemini", "gemini-2.5-flash", usage.input_tokens, usage.output_tokens, 0
    )
    assert usage.cost_usd == response.cost_usd == price
    assert usage.latency_ms is not None and not usage.free_tier
    assert response.provider_latency_ms == usage.latency_ms
    assert outcome.settlement.released_free_slot_day is None
    assert_no_secret(outcome, setup)


async def test_free_image_uses_the_reported_cost_and_serves_the_image(setup: Setup) -> None:
    outcome = await setup.executor().run(routed(kind="image"))
    response, usage = outcome.response, outcome.usage
    assert response.provider == "openrouter" and response.model == FREE_IMAGE
    assert response.free_tier and usage is not None and usage.free_tier
    assert usage.images == 1 and usage.cost_usd == Decimal(0)
    assert response.image_url is not None
    stored = await setup.images.load(response.image_url.rsplit("/", 1)[1])
    assert stored is not None and stored[0].startswith(b"\x89PNG") and stored[1] == "image/png"


async def test_a_rate_limited_key_rests_and_another_key_serves(
    setup: Setup, simulator: Simulator
) -> None:
    limited = setup.key_ids("gemini")[0]
    simulator.rules({"action": "429", "key_id": limited, "retry_after_s": 30})
    executor = setup.executor()
    outcomes = [await executor.run(routed(kind="text")) for _ in range(6)]
    assert all(o.response.status is ResponseStatus.OK for o in outcomes)
    calls = simulator.calls()
    limited_calls = [c for c in calls if c["key_id"] == limited]
    assert len(limited_calls) == 1 and limited_calls[0]["status"] == 429
    assert {o.usage.key_id for o in outcomes if o.usage} <= set(setup.key_ids("gemini")[1:])


async def test_gemini_retry_info_rests_the_key_and_all_resting_waits_instead_of_failing(
    setup: Setup, simulator: Simulator
) -> None:
    simulator.rules({"action": "429", "provider": "gemini", "retry_after_s": 0.3, "times": 3})
    outcome = await setup.executor().run(routed(kind="text"))
    assert outcome.response.status is ResponseStatus.OK and outcome.response.provider == "gemini"
    calls = simulator.calls()
    assert [c["status"] for c in calls] == [429, 429, 429, 200]
    assert calls[3]["started"] - calls[0]["finished"] >= 0.25, "waited for a rested key"


async def test_server_errors_are_retried_then_the_next_model_serves_and_the_slot_goes_back(
    setup: Setup, simulator: Simulator
) -> None:
    simulator.rules({"action": "500", "provider": "openrouter"})
    outcome = await setup.executor(attempts_per_model=3).run(routed(kind="image"))
    response = outcome.response
    assert response.status is ResponseStatus.OK and response.provider == "gemini"
    assert not response.free_tier and response.rationale is not None
    assert response.rationale.startswith("served by fallback gemini/gemini-2.5-flash-image")
    assert outcome.settlement.released_free_slot_day == datetime.now(UTC).date()
    assert response.cost_usd is not None and response.cost_usd > 0
    assert outcome.settlement.actual_cost_usd == response.cost_usd
    statuses = [(c["provider"], c["status"]) for c in simulator.calls()]
    assert statuses == [("openrouter", 500)] * 3 + [("gemini", 200)]


async def test_the_breaker_opens_skips_the_model_then_a_probe_closes_it(
    setup: Setup, simulator: Simulator
) -> None:
    simulator.rules({"action": "503", "provider": "openrouter"})
    executor = setup.executor(attempts_per_model=2)
    for _ in range(2):
        await executor.run(routed(kind="image"))
    breaker = setup.breakers.get("openrouter", FREE_IMAGE)
    assert state(breaker) is BreakerState.OPEN
    before = len(simulator.calls())
    skipped = await executor.run(routed(kind="image"))
    assert skipped.response.provider == "gemini"
    assert [c["provider"] for c in simulator.calls()[before:]] == ["gemini"], "open: not called"
    simulator.rules()
    await asyncio.sleep(0.6)
    probe = await executor.run(routed(kind="image"))
    assert probe.response.provider == "openrouter" and state(breaker) is BreakerState.CLOSED


async def test_malformed_answers_move_on_at_once_and_count_toward_the_breaker(
    setup: Setup, simulator: Simulator
) -> None:
    """A provider answering 200 with garbage is failing: it used to be a refusal that never
    counted, so the breaker stayed closed however much garbage came back."""
    simulator.rules({"action": "malformed", "provider": "openrouter"})
    executor = setup.executor(attempts_per_model=3)
    breaker = setup.breakers.get("openrouter", FREE_IMAGE)
    runs = 0
    while state(breaker) is not BreakerState.OPEN and runs < 10:
        before = len(simulator.calls())
        outcome = await executor.run(routed(kind="image"))
        runs += 1
        assert outcome.response.provider == "gemini"
        called = [c["provider"] for c in simulator.calls()[before:]]
        assert called == ["openrouter", "gemini"], "one malformed answer, then the fallback"
    assert state(breaker) is BreakerState.OPEN, f"still {state(breaker)} after {runs} runs"
    before = len(simulator.calls())
    await executor.run(routed(kind="image"))
    assert [c["provider"] for c in simulator.calls()[before:]] == ["gemini"], "open: not called"


async def test_retries_stop_at_the_deadline_and_the_answer_says_why(
    setup: Setup, simulator: Simulator
) -> None:
    deadline = datetime.now(UTC) + timedelta(seconds=1.5)
    simulator.server.state.timeout_hold_s = 2
    started = datetime.now(UTC)
    outcome = await setup.executor(call_timeout_s=0.6).run(
        routed(kind="image", prompt="slow [sim:timeout]", deadline=deadline)
    )
    elapsed = (datetime.now(UTC) - started).total_seconds()
    assert outcome.response.status is ResponseStatus.FAILED and outcome.usage is None
    assert outcome.response.error is not None and "did not answer" in outcome.response.error
    assert outcome.response.refusal == Refusal(kind=RefusalKind.DEADLINE)
    assert outcome.settlement.released_free_slot_day is not None
    assert elapsed < 2.5, "bounded by the deadline, not by attempts x timeout"


async def test_a_lone_model_cut_off_by_the_deadline_is_a_deadline_refusal(
    setup: Setup, simulator: Simulator
) -> None:
    simulator.server.state.timeout_hold_s = 2
    deadline = datetime.now(UTC) + timedelta(seconds=0.8)
    slow = routed(kind="text", prompt="slow [sim:timeout]", deadline=deadline)
    lone = slow.model_copy(update={"chain": slow.chain[:1]})
    outcome = await setup.executor(call_timeout_s=5).run(lone)
    assert outcome.response.status is ResponseStatus.FAILED
    assert outcome.response.refusal == Refusal(kind=RefusalKind.DEADLINE)
    assert len(simulator.calls()) == 1


async def test_a_request_past_its_deadline_is_not_sent(setup: Setup, simulator: Simulator) -> None:
    late = routed(kind="text", deadline=datetime.now(UTC) - timedelta(seconds=1))
    outcome = await setup.executor().run(late)
    assert outcome.response.status is ResponseStatus.FAILED
    assert outcome.response.error is not None and "deadline passed" in outcome.response.error
    assert outcome.response.refusal == Refusal(kind=RefusalKind.DEADLINE)
    assert simulator.calls() == []


async def test_every_provider_failing_is_a_provider_error(
    setup: Setup, simulator: Simulator
) -> None:
    simulator.rules({"action": "500"})
    outcome = await setup.executor(attempts_per_model=1).run(routed(kind="text"))
    assert outcome.response.status is ResponseStatus.FAILED
    assert outcome.response.refusal == Refusal(kind=RefusalKind.PROVIDER_ERROR)
    assert len(simulator.calls()) == len(routed(kind="text").chain)


async def test_every_circuit_open_is_unavailable_until_the_first_cool_down_ends(
    setup: Setup, simulator: Simulator
) -> None:
    image = routed(kind="image")
    for choice in image.chain:
        breaker = setup.breakers.get(choice.service, choice.model)
        for _ in range(4):  # min_calls, all failed
            breaker.record(time.monotonic(), ok=False)
    outcome = await setup.executor().run(image)
    assert outcome.response.status is ResponseStatus.FAILED and simulator.calls() == []
    assert outcome.response.refusal == Refusal(kind=RefusalKind.UNAVAILABLE, retry_after_s=1)


async def test_unconfigured_providers_are_unavailable(setup: Setup, simulator: Simulator) -> None:
    none_configured = Executor({}, setup.breakers, load_catalog(), setup.images, ExecuteConfig())
    outcome = await none_configured.run(routed(kind="image"))
    assert outcome.response.status is ResponseStatus.FAILED and simulator.calls() == []
    assert outcome.response.refusal == Refusal(kind=RefusalKind.UNAVAILABLE)


async def test_every_key_resting_past_the_deadline_is_rate_limited_with_the_rest_time(
    setup: Setup, simulator: Simulator
) -> None:
    simulator.rules({"action": "429", "retry_after_s": 30})
    deadline = datetime.now(UTC) + timedelta(seconds=2)
    outcome = await setup.executor().run(routed(kind="text", deadline=deadline))
    refusal = outcome.response.refusal
    assert outcome.response.status is ResponseStatus.FAILED and refusal is not None
    assert refusal.kind is RefusalKind.RATE_LIMITED
    assert refusal.retry_after_s is not None and 25 <= refusal.retry_after_s <= 30


@pytest.mark.parametrize(
    ("misses", "expected"),
    [
        ([], Refusal(kind=RefusalKind.DEADLINE)),
        (
            [
                Refusal(kind=RefusalKind.UNAVAILABLE, retry_after_s=9),
                Refusal(kind=RefusalKind.PROVIDER_ERROR),
                Refusal(kind=RefusalKind.DEADLINE),
            ],
            Refusal(kind=RefusalKind.DEADLINE),
        ),
        (
            [Refusal(kind=RefusalKind.RATE_LIMITED), Refusal(kind=RefusalKind.PROVIDER_ERROR)],
            Refusal(kind=RefusalKind.PROVIDER_ERROR),
        ),
        (
            [
                Refusal(kind=RefusalKind.UNAVAILABLE, retry_after_s=3),
                Refusal(kind=RefusalKind.RATE_LIMITED, retry_after_s=20),
                Refusal(kind=RefusalKind.RATE_LIMITED, retry_after_s=7),
            ],
            Refusal(kind=RefusalKind.RATE_LIMITED, retry_after_s=7),
        ),
        (
            [
                Refusal(kind=RefusalKind.UNAVAILABLE),
                Refusal(kind=RefusalKind.UNAVAILABLE, retry_after_s=12),
            ],
            Refusal(kind=RefusalKind.UNAVAILABLE, retry_after_s=12),
        ),
    ],
)
def test_the_chains_failure_is_its_most_telling_miss(
    misses: list[Refusal], expected: Refusal
) -> None:
    assert failure_refusal(misses) == expected


def test_an_internal_failure_says_so() -> None:
    outcome = internal_failure(routed(kind="text"), RuntimeError("boom"))
    assert outcome.response.refusal == Refusal(kind=RefusalKind.INTERNAL)
