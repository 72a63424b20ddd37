"""The world flow run in-process (runtime.testing): events and ticks of both topics split
into one batch per write, bad input dead-lettered in offset order, the owned partitions
handed to the flow and taken back at shutdown, offsets committed after the write."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from aiokafka import TopicPartition

from agents.world.apply import Applied, apply_event
from agents.world.flow import WORLD, WorldInputs, declare
from agents.world.model import WorldState
from agents.world.step import step
from runtime.spec import Assignor
from runtime.testing import DeadLetterList, ListConsumer, records, run_flow
from schemas import encode
from schemas.events import WorldTick
from tests.agents.world_fixtures import village_loaded, world_event
from topics.catalog import WORLD_EVENTS, WORLD_TICKS


class Worlds:
    """A sink that applies the pure world logic in memory (the owner does the same and stores
    it), dead-lettering what the rules reject."""

    def __init__(self, dead: DeadLetterList) -> None:
        self.dead = dead
        self.states: dict[str, WorldState] = {}
        self.owned: set[int] = set()
        self.partition_count: int | None = None
        self.released: list[set[int]] = []
        self.closed = False

    async def write(self, batch: WorldInputs) -> None:
        for item in batch.events:
            event = item.event
            state = self.states.get(event.world_id, WorldState(event.world_id))
            outcome = apply_event(state, event)
            if isinstance(outcome, Applied):
                self.states[event.world_id] = outcome.state
            elif not hasattr(outcome, "kind"):
                continue  # a duplicate: nothing changes
            else:
                await self.dead(item.origin, outcome.kind, outcome.reason)
        for tick in batch.ticks:
            state = self.states[tick.event.world_id]
            while state.tick < tick.event.tick:
                state, _ = step(state, state.tick + 1)
            self.states[tick.event.world_id] = state

    async def close(self) -> None:
        self.closed = True

    def assigned(self, partitions: frozenset[TopicPartition], counts: Mapping[str, int]) -> None:
        self.owned = {tp.partition for tp in partitions if tp.topic == WORLD_EVENTS.name}
        self.partition_count = counts.get(WORLD_EVENTS.name)

    async def revoked(self, partitions: frozenset[TopicPartition]) -> None:
        self.released.append({tp.partition for tp in partitions if tp.topic == WORLD_EVENTS.name})


async def test_events_and_ticks_are_applied_and_rejects_dead_lettered_in_offset_order() -> None:
    w = "w-flow"
    moved = world_event(w, "npc_moved", npc_id="npc-1", location_id="farm")
    events = [
        encode(village_loaded(w)),
        b"{",
        encode(moved),
        # An unknown type breaks the contract (a union keyed on `type`): refused at decode.
        b'{"event_id": "ev-x", "world_id": "%s", "type": "no_such_type", "payload": {}, '
        b'"occurred_at": "2026-03-01T12:00:00Z"}' % w.encode(),
        encode(village_loaded(w)),  # the same event id again: a duplicate
    ]
    ticks = [
        encode(WorldTick(world_id=w, tick=3, occurred_at=datetime.now(UTC))),
        b"[]",
    ]
    dead = DeadLetterList()
    worlds = Worlds(dead)
    consumer = ListConsumer(
        [*records(WORLD_EVENTS.name, events), *records(WORLD_TICKS.name, ticks)],
        partition_counts={WORLD_EVENTS.name: 2, WORLD_TICKS.name: 2},
    )

    await run_flow(declare(worlds, dead, rebalance=worlds), consumer)

    expected = WorldState(w)
    for event in (village_loaded(w), moved):
        outcome = apply_event(expected, event)
        assert isinstance(outcome, Applied)
        expected = outcome.state
    for tick in (1, 2, 3):
        expected, _ = step(expected, tick)
    assert worlds.states[w] == expected
    assert sorted((d.record.topic, d.record.offset, d.kind) for d in dead.letters) == [
        (WORLD_EVENTS.name, 1, "json"),
        (WORLD_EVENTS.name, 3, "schema"),
        (WORLD_TICKS.name, 1, "schema"),
    ]
    assert consumer.committed == {
        TopicPartition(WORLD_EVENTS.name, 0): 5,
        TopicPartition(WORLD_TICKS.name, 0): 2,
    }
    assert worlds.owned == {0, 1}
    assert worlds.partition_count == 2
    assert worlds.released == [{0, 1}], "stopping hands back every owned partition"
    assert worlds.closed


def test_partition_p_of_both_topics_goes_to_one_member() -> None:
    assert WORLD.assignor is Assignor.RANGE
    assert set(WORLD.topics) == {WORLD_EVENTS.name, WORLD_TICKS.name}
    assert WORLD.group_of("scribe") == "scribe.world"
