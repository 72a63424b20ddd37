"""The decide and settle flows run in-process (runtime.testing) on a real Redis: requests
split and decided in one hop, quotas and budgets exact when a batch is decided twice and when
several deciders race on one user, duplicates answered once the request settles, settlements
applied once, Redis down holds the batch back."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from aiokafka import TopicPartition

from agents.router.budget_state import BudgetBook
from agents.router.decide import Emit
from agents.router.decide_flow import (
    DECIDE,
    SETTLE,
    Deciding,
    Settling,
    declare_decide,
    declare_settle,
)
from agents.router.ledger_store import RouterStore, ledger_key
from agents.router.policy import PolicyConfig, Route, UserLedger, decide
from runtime.flow import Flow, FlowRunner
from runtime.source import Record
from runtime.testing import DeadLetterList, ListConsumer, records, run_flow
from schemas import decode, encode
from schemas.events import (
    AIRequest,
    AIResponse,
    RefusalKind,
    ResponseStatus,
    RoutedRequest,
    RouterSettlement,
)
from schemas.examples import example
from schemas.model_catalog import load_catalog
from topics.catalog import (
    AI_LANE_DEFERRED,
    AI_LANE_NORMAL,
    AI_LANE_URGENT,
    AI_REQUESTS,
    AI_REQUESTS_HELD,
    AI_REQUESTS_READY,
    AI_RESPONSES,
    AI_ROUTER_SETTLEMENTS,
)

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 27, 14, 0, tzinfo=UTC)
WINDOW_S = 600
SERVICES = frozenset({"openrouter", "gemini"})
LANES = {AI_LANE_URGENT, AI_LANE_NORMAL, AI_LANE_DEFERRED}


@pytest.fixture
async def second_client(services: dict[str, str]) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(services["SCRIBE_REDIS_URL"])
    yield client
    await client.aclose()


class Decider:
    """One worker's decide and settle flows, publishing into lists."""

    def __init__(
        self,
        client: aioredis.Redis,
        budgets: BudgetBook | None = None,
        max_batch: int = DECIDE.max_batch,
        **config: Any,
    ) -> None:
        self.store = RouterStore(client, WINDOW_S)
        self.sent: list[Emit] = []
        self.dead = DeadLetterList()
        self.max_batch = max_batch
        self.deciding = Deciding(
            self.store,
            budgets or BudgetBook(),
            load_catalog(),
            PolicyConfig(services=SERVICES, **config),
            self.publish,
            clock=lambda: NOW,
        )

    async def publish(self, emits: list[Emit]) -> None:
        await asyncio.sleep(0)  # another decider may run meanwhile, as over a network
        self.sent.extend(emits)

    def flow(self) -> Flow[Any, Any]:
        flow = declare_decide(self.deciding, self.dead)
        return replace(flow, spec=replace(flow.spec, max_batch=self.max_batch))

    async def run(self, given: Sequence[Record]) -> ListConsumer:
        consumer = ListConsumer(given)
        await run_flow(self.flow(), consumer)
        return consumer

    async def settle(self, settlements: Sequence[RouterSettlement]) -> ListConsumer:
        consumer = ListConsumer(
            records(AI_ROUTER_SETTLEMENTS.name, [encode(s) for s in settlements])
        )
        settling = Settling(self.store, self.publish, clock=lambda: NOW)
        await run_flow(declare_settle(settling, self.dead), consumer)
        return consumer

    def to(self, *specs: Any) -> list[Emit]:
        return [e for e in self.sent if e.spec in specs]

    def routed(self) -> list[RoutedRequest]:
        return [decode(e.value, RoutedRequest) for e in self.to(*LANES)]

    async def ledger(self, user: str) -> UserLedger:
        raw = await self.store.client.hget(ledger_key(user), "ledger")
        return UserLedger.loads(raw.encode() if isinstance(raw, str) else raw)


def user() -> str:
    return f"u-{uuid.uuid4().hex[:10]}"


def image(user_id: str, n: int = 0, **fields: Any) -> AIRequest:
    fields.setdefault("priority", "urgent")
    return example(AIRequest, kind="image", user_id=user_id, prompt=f"a harbour #{n}", **fields)


def on(topic: str, requests: Sequence[AIRequest], partition: int = 0) -> list[Record]:
    return records(topic, [encode(r) for r in requests], partition)


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


async def test_requests_reach_their_lane_in_one_hop_and_low_ones_are_held(
    redis_client: aioredis.Redis,
) -> None:
    step = Decider(redis_client)
    u = user()
    urgent = image(u)
    normal = example(AIRequest, user_id=u, priority="normal")
    background = example(AIRequest, user_id=u, priority="background")
    released = example(AIRequest, user_id=u, priority="background")
    given = [
        *records(AI_REQUESTS.name, [encode(urgent), b"{}", encode(normal), encode(background)]),
        *on(AI_REQUESTS_READY.name, [released]),
    ]
    consumer = await step.run(given)

    assert [(e.spec, e.key) for e in step.to(*LANES)] == [
        (AI_LANE_URGENT, u.encode()),
        (AI_LANE_NORMAL, u.encode()),
        (AI_LANE_DEFERRED, u.encode()),
    ]
    assert [r.request.request_id for r in step.routed()] == [
        urgent.request_id,
        normal.request_id,
        released.request_id,
    ]
    assert [e.value for e in step.to(AI_REQUESTS_HELD)] == [encode(background)]
    assert [(d.record.offset, d.kind) for d in step.dead.letters] == [(1, "schema")]
    assert consumer.committed == {
        TopicPartition(AI_REQUESTS.name, 0): 4,
        TopicPartition(AI_REQUESTS_READY.name, 0): 1,
    }


def test_the_groups_are_named_after_the_flows() -> None:
    assert DECIDE.group_of("scribe") == "scribe.router-decide"
    assert SETTLE.group_of("scribe") == "scribe.router-settle"


async def test_a_batch_decided_twice_counts_the_free_images_once(
    redis_client: aioredis.Redis,
) -> None:
    u = user()
    given = on(AI_REQUESTS.name, [image(u, n) for n in range(5)])
    first, again = Decider(redis_client, free_images_per_day=3), Decider(redis_client)
    await first.run(given)
    await again.run(given)  # the same records read again: a crash before the commit

    assert [r.chain[0].free_tier for r in first.routed()] == [True, True, True, False, False]
    assert [e.value for e in again.sent] == [e.value for e in first.sent], "sent as decided"
    assert (await first.ledger(u)).free_images_used == 3


async def test_two_deciders_racing_on_one_user_grant_exactly_the_free_images(
    redis_client: aioredis.Redis, second_client: aioredis.Redis
) -> None:
    u, quota = user(), 20
    requests = [image(u, n) for n in range(60)]
    deciders = [
        Decider(client, max_batch=3, free_images_per_day=quota)
        for client in (redis_client, second_client)
    ]
    # Each decider owns one partition holding half of the user's requests.
    await asyncio.gather(
        *(d.run(on(AI_REQUESTS.name, requests[i::2], i)) for i, d in enumerate(deciders))
    )

    routed = [r for d in deciders for r in d.routed()]
    assert sorted(r.request.request_id for r in routed) == sorted(r.request_id for r in requests)
    assert sum(r.chain[0].free_tier for r in routed) == quota
    assert all(d.routed() for d in deciders), "both decided some"
    assert (await deciders[0].ledger(u)).free_images_used == quota


@pytest.mark.parametrize("over_budget", ["downgrade", "reject"])
async def test_fifty_concurrent_requests_spend_at_most_the_budget(
    redis_client: aioredis.Redis, second_client: aioredis.Redis, over_budget: str
) -> None:
    u = user()
    requests = [example(AIRequest, user_id=u, prompt=f"Describe tavern {n}.") for n in range(50)]
    config = PolicyConfig(services=SERVICES)
    priced = decide(requests[0], UserLedger(), None, now=NOW, catalog=load_catalog(), config=config)
    assert isinstance(priced, Route) and priced.estimated_cost_usd > 0
    full_price = priced.estimated_cost_usd
    budgets = BudgetBook()
    budgets.apply(u.encode(), orjson.dumps({"budget_usd": str(full_price * 10), "spent_usd": "0"}))
    deciders = [
        Decider(client, budgets, max_batch=2, over_budget=over_budget)
        for client in (redis_client, second_client, redis_client, second_client, redis_client)
    ]
    await asyncio.gather(
        *(d.run(on(AI_REQUESTS.name, requests[i::5], i)) for i, d in enumerate(deciders))
    )

    routed = [r for d in deciders for r in d.routed()]
    rejected = [decode(e.value, AIResponse) for d in deciders for e in d.to(AI_RESPONSES)]
    full = [r for r in routed if r.estimated_cost_usd == full_price]
    assert len(full) == 10, "exactly the budget's worth at full price"
    assert len(routed) + len(rejected) == 50
    if over_budget == "downgrade":
        downgraded = [r for r in routed if r.estimated_cost_usd < full_price]
        assert not rejected and len(downgraded) == 40
        assert sum(r.estimated_cost_usd for r in routed) <= full_price * 10
    else:
        assert len(rejected) == 40 and all(r.status is ResponseStatus.REJECTED for r in rejected)
    assert (await deciders[0].ledger(u)).committed_usd <= full_price * 10


async def test_a_duplicate_in_flight_waits_and_gets_the_response_when_it_settles(
    redis_client: aioredis.Redis,
) -> None:
    step = Decider(redis_client)
    u = user()
    request = image(u)
    await step.run(on(AI_REQUESTS.name, [request]))
    await step.run(records(AI_REQUESTS.name, [encode(request)] * 3)[1:])  # two duplicates
    [lane] = step.to(*LANES)
    assert not step.to(AI_RESPONSES), "the duplicates wait; not executed again"

    await step.settle([settlement_for(lane)])
    answers = [decode(e.value, AIResponse) for e in step.to(AI_RESPONSES)]
    assert len(answers) == 2 and all(a.output == "done" for a in answers)

    step.sent.clear()
    await step.run(on(AI_REQUESTS.name, [request], partition=3))  # after the answer
    [replayed] = step.sent
    assert replayed.spec is AI_RESPONSES and decode(replayed.value, AIResponse).output == "done"


async def test_a_settlement_gives_back_the_free_slot_once_even_if_redelivered(
    redis_client: aioredis.Redis,
) -> None:
    step = Decider(redis_client, free_images_per_day=1000)
    u = user()
    await step.run(on(AI_REQUESTS.name, [image(u)]))
    assert (await step.ledger(u)).free_images_used == 1
    settlement = settlement_for(step.to(*LANES)[0], released=True)
    await step.settle([settlement, settlement])
    await step.settle([settlement])
    ledger = await step.ledger(u)
    assert ledger.free_images_used == 0
    assert ledger.committed_usd == Decimal("0.039")


async def test_a_rejection_is_answered_at_once_and_replayed_for_duplicates(
    redis_client: aioredis.Redis,
) -> None:
    u = user()
    budgets = BudgetBook()
    budgets.apply(u.encode(), b'{"budget_usd": "0", "spent_usd": "0"}')
    step = Decider(redis_client, budgets, over_budget="reject")
    request = example(AIRequest, user_id=u, priority="urgent")
    await step.run(records(AI_REQUESTS.name, [encode(request)] * 2))
    first, second = step.sent
    response = decode(first.value, AIResponse)
    assert first.spec is AI_RESPONSES and response.status is ResponseStatus.REJECTED
    assert response.error is not None and "over budget" in response.error
    assert response.refusal is not None and response.refusal.kind is RefusalKind.BUDGET
    assert 0 < (response.refusal.retry_after_s or 0) <= 31 * 24 * 3600  # until the month turns
    assert second.value == first.value


async def test_while_redis_is_down_the_batch_is_neither_sent_nor_committed() -> None:
    down = aioredis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    step = Decider(down)
    consumer = ListConsumer(on(AI_REQUESTS.name, [image(user())]))
    runner: FlowRunner[Any, Any] = FlowRunner(step.flow(), consumer)
    await runner.start()
    running = asyncio.create_task(runner.run())
    try:
        await asyncio.sleep(1.5)
        assert consumer.drained, "the batch was read"
        assert not step.sent and not consumer.committed
    finally:
        await runner.stop()
        await running
        await down.aclose()
    assert not consumer.committed


async def test_a_request_settled_without_a_record_here_is_answered_not_routed_again(
    redis_client: aioredis.Redis,
) -> None:
    """A settlement whose decision record is gone (expired, or decided before the upgrade)
    still keeps the response for the request id."""
    other, step = Decider(redis_client), Decider(redis_client)
    request = image(user())
    await other.run(on(AI_REQUESTS.name, [request]))
    await redis_client.delete(f"router:request:{request.request_id}")
    await step.settle([settlement_for(other.to(*LANES)[0])])
    await step.run(on(AI_REQUESTS.name, [request], partition=1))
    [answer] = step.sent
    assert answer.spec is AI_RESPONSES and decode(answer.value, AIResponse).output == "done"
