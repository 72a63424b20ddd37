from __future__ import annotations

from typing import Any

import pytest

from agents.world.apply import (
    EVENT_TYPES,
    Applied,
    Duplicate,
    Rejected,
    apply_event,
    recorded_memory,
)
from agents.world.model import WorldState, canonical_json, state_hash
from schemas import DecodeError, decode, validate
from schemas.events import WorldEvent
from schemas.examples import world_event_examples
from schemas.world import PAYLOADS, LocationKind
from tests.agents.world_fixtures import applied, village, world_event


def test_world_loaded_with_a_template_generates_a_village_once() -> None:
    world = village("w-gen")
    assert world.loaded
    assert len(world.npcs) == 8 and len(world.locations) == 11 and len(world.factions) == 2
    again = apply_event(world, world_event("w-gen", "world_loaded", template="village"))
    assert isinstance(again, Applied)
    assert again.derived == []
    assert again.state.npcs.keys() == world.npcs.keys()


def test_generation_is_deterministic_per_world_id() -> None:
    assert canonical_json(village("w-a")) == canonical_json(village("w-a"))
    names_a = [n.name for n in village("w-a").npcs.values()]
    names_b = [n.name for n in village("w-b").npcs.values()]
    assert names_a != names_b


def test_each_event_type_changes_the_world() -> None:
    w = "w-rules"
    world = applied(WorldState(w), world_event(w, "world_loaded", name="Rivermouth"))
    world = applied(
        world, world_event(w, "location_created", location_id="inn", name="Inn", kind="tavern")
    )
    world = applied(
        world,
        world_event(
            w,
            "location_created",
            location_id="field",
            name="Field",
            kind="farm",
            stock={"grain": 12},
        ),
    )
    world = applied(world, world_event(w, "faction_changed", faction_id="crows", name="Crows"))
    world = applied(
        world,
        world_event(
            w,
            "npc_created",
            npc_id="ana",
            name="Ana",
            location_id="inn",
            faction_id="crows",
            wealth=7,
        ),
    )
    world = applied(world, world_event(w, "npc_created", npc_id="bo", name="Bo"))
    world = applied(world, world_event(w, "npc_moved", npc_id="bo", location_id="field"))
    world = applied(
        world, world_event(w, "item_created", item_id="lute", name="Lute", owner_id="ana", value=30)
    )
    world = applied(
        world, world_event(w, "relationship_changed", npc_id="ana", other_npc_id="bo", delta=40)
    )
    world = applied(
        world,
        world_event(
            w,
            "faction_changed",
            faction_id="crows",
            join=["bo"],
            treasury_delta=50,
            attitudes={"crows": 5},
        ),
    )
    world = applied(
        world, world_event(w, "memory_recorded", npc_id="ana", content="Bo fixed the lute.")
    )
    world = applied(world, world_event(w, "world_unloaded"))

    assert world.name == "Rivermouth" and not world.loaded
    assert world.locations["field"].kind is LocationKind.FARM
    assert world.locations["field"].stock == {"grain": 12}
    assert world.npcs["ana"].location_id == "inn" and world.npcs["ana"].wealth == 7
    assert world.npcs["bo"].location_id == "field"
    assert world.npcs["bo"].faction_id == "crows"
    assert world.items["lute"].owner_id == "ana"
    assert world.npcs["ana"].relationships == {"bo": 40}
    assert world.factions["crows"].treasury == 50
    assert world.factions["crows"].attitudes == {}  # no attitude toward itself
    assert world.memories == 1 and world.npcs["ana"].memories == 1
    assert world.version == 12


def test_an_event_applied_twice_changes_nothing() -> None:
    world = village("w-dup")
    event = world_event("w-dup", "npc_moved", npc_id="npc-1", location_id="tavern")
    once = applied(world, event)
    twice = apply_event(once, event)
    assert isinstance(twice, Duplicate)
    assert "already applied" in twice.reason
    assert state_hash(once) != state_hash(world)


def test_a_repeated_id_with_other_content_is_still_a_duplicate() -> None:
    world = village("w-dup2")
    first = applied(world, world_event("w-dup2", "world_unloaded", event_id="same"))
    again = apply_event(first, world_event("w-dup2", "world_loaded", event_id="same"))
    assert isinstance(again, Duplicate)


def test_an_event_at_or_below_the_applied_version_is_a_duplicate() -> None:
    world = village("w-ver")
    v5 = world_event("w-ver", "world_unloaded").model_copy(update={"version": 5})
    world = applied(world, v5)
    assert world.event_version == 5
    for version in (3, 5):
        stale = world_event("w-ver", "world_loaded").model_copy(update={"version": version})
        assert isinstance(apply_event(world, stale), Duplicate)
    newer = world_event("w-ver", "world_loaded").model_copy(update={"version": 9})
    assert applied(world, newer).event_version == 9


def test_only_recent_ids_are_kept_in_the_state() -> None:
    world = WorldState("w-window")
    for number in range(100):
        world = applied(world, world_event("w-window", "world_loaded", event_id=f"e-{number}"))
    assert len(world.recent_event_ids) == 64
    assert world.recent_event_ids[-1] == "e-99"


def test_every_world_event_type_in_the_contract_has_a_rule() -> None:
    assert set(EVENT_TYPES) == set(PAYLOADS)


def test_the_contract_examples_apply_one_after_another_to_a_fresh_world() -> None:
    world = WorldState("world-1")
    for event in world_event_examples("world-1"):
        outcome = apply_event(world, event)
        assert isinstance(outcome, Applied), (event.type, outcome)
        world = outcome.state
    assert not world.loaded and world.items["lantern-1"].owner_id == "npc-40"


@pytest.mark.parametrize(
    ("type_", "payload", "expected"),
    [
        ("dragon_summoned", {}, "type: Input tag 'dragon_summoned'"),
        ("npc_created", {"name": "Nameless"}, "payload.npc_id: Field required"),
        ("npc_created", {"npc_id": "x", "name": "X", "wealth": 1.5}, "payload.wealth: "),
        ("npc_created", {"npc_id": "x", "name": "X", "colour": "red"}, "payload.colour: "),
        ("location_created", {"location_id": "l", "name": "L", "kind": "moon"}, "payload.kind: "),
        ("memory_recorded", {"content": "a\x00b"}, "payload.content: Value error, text must not"),
    ],
)
def test_unknown_types_and_invalid_payloads_never_reach_the_world(
    type_: str, payload: dict[str, Any], expected: str
) -> None:
    """The contract refuses them at decode (the worker dead-letters them with kind `schema`)."""
    fields = {
        "event_id": "e-bad",
        "world_id": "w-bad",
        "type": type_,
        "payload": payload,
        "occurred_at": "2026-03-01T00:00:00Z",
    }
    with pytest.raises(DecodeError) as refused:
        validate(fields, WorldEvent)
    assert expected in refused.value.reason


@pytest.mark.parametrize(
    ("type_", "payload", "expected"),
    [
        ("npc_moved", {"npc_id": "npc-1", "location_id": "atlantis"}, "'atlantis' does not"),
        ("npc_moved", {"npc_id": "ghost", "location_id": "tavern"}, "npc 'ghost' does not"),
        ("npc_created", {"npc_id": "npc-1", "name": "Again"}, "already exists"),
        ("location_created", {"location_id": "farm", "name": "F", "kind": "farm"}, "already"),
        ("faction_changed", {"faction_id": "guild", "treasury_delta": -(10**6)}, "cannot take"),
        (
            "relationship_changed",
            {"npc_id": "npc-1", "other_npc_id": "npc-1", "delta": 1},
            "itself",
        ),
        (
            "item_created",
            {"item_id": "i", "name": "I", "location_id": "farm", "owner_id": "npc-1"},
            "not both",
        ),
    ],
)
def test_broken_rules_are_rejected_with_a_reason(
    type_: str, payload: dict[str, Any], expected: str
) -> None:
    world = village("w-bad")
    outcome = apply_event(world, world_event("w-bad", type_, **payload))
    assert isinstance(outcome, Rejected), outcome
    assert outcome.kind == "payload"
    assert expected in outcome.reason
    assert outcome.reason.startswith(type_)


def test_a_rejected_event_is_not_remembered_as_applied() -> None:
    world = village("w-rej")
    bad = world_event(
        "w-rej", "npc_moved", event_id="later-fixed", npc_id="ghost", location_id="farm"
    )
    assert isinstance(apply_event(world, bad), Rejected)
    assert "later-fixed" not in world.recent_event_ids


def test_apply_does_not_change_its_input() -> None:
    world = village("w-pure")
    before = canonical_json(world)
    apply_event(world, world_event("w-pure", "npc_moved", npc_id="npc-2", location_id="mine"))
    assert canonical_json(world) == before


def test_an_event_for_another_world_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="applied to world"):
        apply_event(WorldState("w-1"), world_event("w-2", "world_loaded"))


def test_recorded_memory_defaults_its_id_to_the_event_id() -> None:
    event = world_event("w-m", "memory_recorded", event_id="ev-m", content="Rain again.")
    memory = recorded_memory(event)
    assert memory is not None
    assert (memory.memory_id, memory.npc_id, memory.importance) == ("ev-m", None, 5)
    assert recorded_memory(world_event("w-m", "world_loaded")) is None


def test_payload_numbers_decoded_as_json_stay_exact() -> None:
    """The codec decodes JSON numbers as Decimal when they have a fraction: money-like
    amounts in a payload are refused rather than rounded."""
    raw = (
        b'{"event_id": "e", "world_id": "w-n", "type": "npc_created", "occurred_at": '
        b'"2026-03-01T00:00:00Z", "payload": {"npc_id": "n", "name": "N", "wealth": 2.0}}'
    )
    with pytest.raises(DecodeError, match=r"payload\.wealth"):
        decode(raw, WorldEvent)
