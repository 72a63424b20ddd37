from __future__ import annotations

from datetime import UTC, datetime

from agents.world.invalidation import invalidations_for
from agents.world.model import Npc
from agents.world.step import step
from tests.agents.world_fixtures import applied, village, world_event

NOW = datetime(2026, 3, 1, tzinfo=UTC)
BASE = "https://cdn.scribe.invalid/worlds/w-inv"


def test_a_new_world_invalidates_everything_it_shows() -> None:
    world = village("w-inv")
    [inv] = invalidations_for(None, world, NOW)
    assert inv.id == "world:w-inv"
    assert inv.keys[0] == "world:w-inv"
    assert "world:w-inv:npc:npc-1" in inv.keys
    assert f"{BASE}/world.png" in inv.urls and f"{BASE}/npcs/npc-8.png" in inv.urls


def test_moving_an_npc_invalidates_its_card_and_image_only() -> None:
    world = village("w-inv")
    moved = applied(world, world_event("w-inv", "npc_moved", npc_id="npc-2", location_id="mine"))
    [inv] = invalidations_for(world, moved, NOW)
    assert inv.keys == ["world:w-inv", "world:w-inv:npc:npc-2"]
    assert inv.tags == []  # world_state's row was not rewritten
    [checkpointed] = invalidations_for(world, moved, NOW, checkpointed=True)
    assert checkpointed.tags == ["world:w-inv"]
    assert inv.urls == [f"{BASE}/npcs/npc-2.png"]


def test_a_tick_invalidates_the_world_even_when_no_card_changed() -> None:
    world = village("w-inv")
    later, _ = step(world, 1)
    [inv] = invalidations_for(world, later, NOW)
    assert inv.keys[0] == "world:w-inv"
    changed = {k.rsplit(":", 1)[1] for k in inv.keys[1:]}
    assert changed == {n for n in world.npcs if not world.npcs[n].same_card(later.npcs[n])}
    assert changed  # a tick moves someone or changes what they do


def test_no_new_version_no_invalidation() -> None:
    world = village("w-inv")
    assert invalidations_for(world, world, NOW) == []


def test_many_changed_npcs_become_a_pattern_and_urls_are_chunked() -> None:
    world = village("w-big")
    crowd = world.clone()
    for number in range(1500):
        crowd.npcs[f"x-{number}"] = Npc(f"x-{number}", "X", image_url=f"{BASE}/x/{number}.png")
    crowd.version += 1
    invs = invalidations_for(world, crowd, NOW)
    assert invs[0].patterns == ["world:w-big:npc:*"]
    assert invs[0].keys == ["world:w-big"]
    assert sum(len(i.urls) for i in invs) == 1500
    assert all(len(i.urls) <= 1000 for i in invs)
