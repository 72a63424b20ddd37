from __future__ import annotations

from datetime import UTC, datetime

from agents.invalidation.hot_keys import hot_entries, worlds_to_warm
from schemas.events import WorldEvent
from schemas.examples import example


def test_worlds_to_warm_are_the_loaded_ones_each_once() -> None:
    events = [
        example(WorldEvent, world_id="w1", type="world_loaded"),
        example(WorldEvent, world_id="w2", type="npc_created"),
        example(WorldEvent, world_id="w3", type="world_loaded"),
        example(WorldEvent, world_id="w1", type="world_loaded"),
    ]
    assert worlds_to_warm(events) == ["w1", "w3"]


def test_hot_entries_are_the_document_and_each_state_section() -> None:
    updated = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    row = {
        "world_id": "w1",
        "version": 7,
        "tick": 42,
        "state": '{"npcs": {"mira": {"hp": 3}}, "weather": "rain", "bad key!": 1}',
        "state_hash": "abc",
        "updated_at": updated,
    }
    entries = hot_entries(row)
    assert entries["world:w1"] == {
        "world_id": "w1",
        "version": 7,
        "tick": 42,
        "state_hash": "abc",
        "updated_at": updated.isoformat(),
        "state": {"npcs": {"mira": {"hp": 3}}, "weather": "rain", "bad key!": 1},
    }
    assert entries["world:w1:state:npcs"] == {"mira": {"hp": 3}}
    assert entries["world:w1:state:weather"] == "rain"
    assert set(entries) == {"world:w1", "world:w1:state:npcs", "world:w1:state:weather"}


def test_a_state_that_is_not_an_object_has_only_the_document() -> None:
    row = {"world_id": "w1", "version": 1, "tick": 0, "state": [1, 2], "state_hash": None}
    assert list(hot_entries(row)) == ["world:w1"]
