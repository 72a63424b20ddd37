"""The workload: deterministic, valid, and shaped like real traffic."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import cache

import pytest

from agents.world.apply import Applied, apply_event
from agents.world.model import WorldState
from agents.world.owner import MAX_TICK_JUMP
from agents.world.step import step
from devkit.loadgen.workload import (
    WORLD_EVENT_TYPES,
    Malformed,
    Message,
    Mix,
    Workload,
    WorkloadConfig,
)
from schemas import DecodeError, decode, encode
from schemas.events import AIRequest, CacheInvalidation, Event, UsageEvent, WorldEvent, WorldTick
from schemas.model_catalog import load_catalog
from topics.catalog import INPUT_TOPICS, topic, topic_for

START = datetime(2026, 11, 27, 14, 0, tzinfo=UTC)
STEP = timedelta(milliseconds=5)  # the clock of a load at 200 messages/s


def _clock() -> Callable[[], datetime]:
    """A clock that advances STEP per reading, like a load sent at a steady rate."""
    readings = itertools.count()
    return lambda: START + next(readings) * STEP


def _take(count: int, **config: object) -> list[Message]:
    workload = Workload(WorkloadConfig(**config), clock=_clock())  # type: ignore[arg-type]
    return list(itertools.islice(workload, count))


@cache
def _sample() -> list[Message]:
    """One default workload, shared by the tests that only read it."""
    return _take(30_000)


def _events(messages: list[Message]) -> list[Event]:
    return [m for m in messages if not isinstance(m, Malformed)]


def test_the_same_seed_gives_the_same_messages() -> None:
    assert _take(2_000, seed=3) == _take(2_000, seed=3)
    assert _take(2_000, seed=3) != _take(2_000, seed=4)


def test_every_event_is_valid_and_ids_are_unique() -> None:
    events = _events(_take(5_000, run_id="r1"))
    for event in events:
        assert decode(encode(event), type(event)) == event
    ids = [
        getattr(e, "event_id", None) or getattr(e, "request_id", None) or getattr(e, "id", None)
        for e in events
        if not isinstance(e, WorldTick)
    ]
    assert len(ids) == len(set(ids))
    assert all("-r1-" in str(i) for i in ids)


def test_the_mix_follows_its_shares() -> None:
    events = _events(_sample())
    counts = Counter(topic_for(e).name for e in events)
    shares = {name: count / len(events) for name, count in counts.items()}
    expected = Mix()
    assert shares["ai.requests"] == pytest.approx(expected.ai_requests, abs=0.02)
    assert shares["usage.events"] == pytest.approx(expected.usage_events, abs=0.02)
    assert shares["world.events"] == pytest.approx(expected.world_events, abs=0.02)
    assert shares["world.ticks"] == pytest.approx(expected.world_ticks, abs=0.02)
    assert shares["cache.invalidations"] == pytest.approx(expected.cache_invalidations, abs=0.02)
    requests = [e for e in events if isinstance(e, AIRequest)]
    assert {r.priority for r in requests} == {"urgent", "high", "normal", "low", "background"}
    assert Counter(r.kind.value for r in requests)["image"] / len(requests) == pytest.approx(
        0.15, abs=0.02
    )
    assert {r.user_tier for r in requests} == {"free", "premium"}


def test_activity_is_zipf_like_a_few_users_do_most() -> None:
    events = _events(_sample())
    per_user = Counter(e.user_id for e in events if isinstance(e, AIRequest | UsageEvent))
    busiest = sum(count for _, count in per_user.most_common(100))
    assert busiest / per_user.total() > 0.4, "the busiest 1 % of users make a large share"
    assert len(per_user) > 2_000, "and there is a long tail"


def test_invalidations_arrive_in_bursts() -> None:
    messages = _sample()
    runs = [
        len(list(group))
        for is_invalidation, group in itertools.groupby(
            messages, lambda m: isinstance(m, CacheInvalidation)
        )
        if is_invalidation
    ]
    assert runs and min(runs) >= 10 and max(runs) <= 50


def test_ticks_count_up_per_world_and_start_after_the_world_was_loaded() -> None:
    loaded_at: dict[str, datetime] = {}
    last: dict[str, int] = {}
    for message in _take(20_000, worlds=50):
        if isinstance(message, WorldEvent) and message.type == "world_loaded":
            loaded_at.setdefault(message.world_id, message.occurred_at)
        if isinstance(message, WorldTick):
            assert message.occurred_at - loaded_at[message.world_id] >= timedelta(seconds=5)
            assert message.tick == last.get(message.world_id, 0) + 1
            last[message.world_id] = message.tick
    assert len(last) == 50


def test_the_world_flow_accepts_every_world_event_and_tick() -> None:
    """Applied in order to fresh worlds as the worker would (events by `apply_event`, ticks
    advancing the world to their number): nothing is refused."""
    worlds: dict[str, WorldState] = {}
    types: Counter[str] = Counter()
    for message in _take(20_000, worlds=50, run_id="r3"):
        if isinstance(message, WorldEvent):
            state = worlds.get(message.world_id) or WorldState(message.world_id)
            outcome = apply_event(state, message)
            assert isinstance(outcome, Applied), (message, outcome)
            worlds[message.world_id] = outcome.state
            types[message.type] += 1
        elif isinstance(message, WorldTick):
            state = worlds[message.world_id]  # a tick for an unknown world is refused
            assert message.tick - state.tick <= MAX_TICK_JUMP
            while state.tick < message.tick:
                state, _ = step(state, state.tick + 1)
            worlds[message.world_id] = state
    assert set(types) == {"world_loaded", *WORLD_EVENT_TYPES}


def test_usage_is_priced_exactly_from_the_catalog() -> None:
    usage = [m for m in _sample()[:5_000] if isinstance(m, UsageEvent)]
    catalog = load_catalog()
    for event in usage:
        price = catalog.get(event.service, event.model)
        assert event.cost_usd == price.cost(event.input_tokens, event.output_tokens, event.images)
        assert isinstance(event.cost_usd, Decimal)
    assert sum(e.cost_usd or 0 for e in usage) > 0


def test_malformed_messages_are_refused_by_their_topic_schema() -> None:
    messages = _take(10_000, mix=Mix(malformed=0.05), prefix="t-", run_id="r2")
    bad = [m for m in messages if isinstance(m, Malformed)]
    assert len(bad) / len(messages) == pytest.approx(0.05, abs=0.01)
    assert {m.topic for m in bad} == {t.name for t in INPUT_TOPICS}
    assert {m.key for m in bad} == {b"t-bad-r2"}
    for message in bad:
        with pytest.raises(DecodeError):
            decode(message.value, topic(message.topic).model)
