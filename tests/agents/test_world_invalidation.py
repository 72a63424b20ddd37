from __future__ import annotations

from datetime import UTC, datetime

from agents.world.invalidation import (
    MERGED_TARGETS,
    WorldInvalidation,
    invalidations_for,
    one_per_partition,
)
from agents.world.model import Npc
from agents.world.step import step
from schemas.events import CacheInvalidation
from tests.agents.world_fixtures import applied, village, world_event

NOW = datetime(2026, 3, 1, tzinfo=UTC)
BASE = "https://cdn.scribe.invalid/worlds/w-inv"


def test_a_new_world_invalidates_its_cards_and_purges_no_image() -> None:
    world = village("w-inv")
    [inv] = invalidations_for(None, world, NOW)
    assert inv.id == "world:w-inv"
    assert inv.keys[0] == "world:w-inv"
    assert "world:w-inv:npc:npc-1" in inv.keys
    # Its images had no URL before: no CDN can hold one of them from this world.
    assert world.image_url == f"{BASE}/world.png" and inv.urls == []


def test_moving_an_npc_invalidates_its_card_and_purges_no_image() -> None:
    world = village("w-inv")
    moved = applied(world, world_event("w-inv", "npc_moved", npc_id="npc-2", location_id="mine"))
    [inv] = invalidations_for(world, moved, NOW)
    assert inv.keys == ["world:w-inv", "world:w-inv:npc:npc-2"]
    assert inv.tags == []  # world_state's row was not rewritten
    [checkpointed] = invalidations_for(world, moved, NOW, checkpointed=True)
    assert checkpointed.tags == ["world:w-inv"]
    assert inv.urls == []  # the NPC's image does not show where it is


def test_a_tick_invalidates_the_world_even_when_no_card_changed() -> None:
    world = village("w-inv")
    later, _ = step(world, 1)
    [inv] = invalidations_for(world, later, NOW)
    assert inv.keys[0] == "world:w-inv"
    changed = {k.rsplit(":", 1)[1] for k in inv.keys[1:]}
    assert changed == {n for n in world.npcs if not world.npcs[n].same_card(later.npcs[n])}
    assert changed  # a tick moves someone or changes what they do


def test_a_day_of_ticks_purges_no_image_at_the_cdn() -> None:
    """A tick moves NPCs, changes what they do, a place's stock and the weather; none of it is
    in an image, so none is purged (a purge costs a CDN call, a tick happens every second)."""
    before = village("w-inv")
    cards_changed = 0
    for tick in range(1, 289):
        after, _ = step(before, tick)
        [inv] = invalidations_for(before, after, NOW)
        assert inv.urls == [] and inv.tags == [], tick
        cards_changed += len(inv.keys) - 1
        before = after
    assert cards_changed > 288  # the cards still go from Redis


def test_an_image_replaced_or_removed_is_purged_and_one_first_set_is_not() -> None:
    world = village("w-inv")
    changed = world.clone()
    changed.version += 1
    changed.npcs["npc-1"].image_url = f"{BASE}/npcs/npc-1-v2.png"
    changed.npcs["npc-2"].image_url = None
    changed.npcs["x-new"] = Npc("x-new", "New", image_url=f"{BASE}/npcs/x-new.png")
    gone = next(iter(sorted(changed.locations)))
    del changed.locations[gone]
    changed.image_url = f"{BASE}/world-v2.png"
    [inv] = invalidations_for(world, changed, NOW)
    assert inv.urls == sorted(
        [
            f"{BASE}/npcs/npc-1.png",
            f"{BASE}/npcs/npc-1-v2.png",
            f"{BASE}/npcs/npc-2.png",
            f"{BASE}/locations/{gone}.png",
            f"{BASE}/world.png",
            f"{BASE}/world-v2.png",
        ]
    )
    assert {"world:w-inv:npc:npc-1", "world:w-inv:npc:npc-2", "world:w-inv:npc:x-new"} <= set(
        inv.keys
    )


def test_no_new_version_no_invalidation() -> None:
    world = village("w-inv")
    assert invalidations_for(world, world, NOW) == []


def test_many_changed_npcs_become_a_pattern_and_urls_are_chunked() -> None:
    world = village("w-big")
    for number in range(1500):
        world.npcs[f"x-{number}"] = Npc(f"x-{number}", "X", image_url=f"{BASE}/x/{number}.png")
    crowd = world.clone()
    for number in range(1500):  # every image replaced: 3,000 URLs to purge
        crowd.npcs[f"x-{number}"].image_url = f"{BASE}/x/{number}-v2.png"
    crowd.version += 1
    invs = invalidations_for(world, crowd, NOW)
    assert invs[0].patterns == ["world:w-big:npc:*"]
    assert invs[0].keys == ["world:w-big"]
    assert sum(len(i.urls) for i in invs) == 3000
    assert all(len(i.urls) <= 1000 for i in invs)


def _ticked(world_ids: list[str], checkpointed: bool = False) -> list[WorldInvalidation]:
    invalidations = []
    for world_id in world_ids:
        world = village(world_id)
        later, _ = step(world, 1)
        invalidations.extend(invalidations_for(world, later, NOW, checkpointed))
    return invalidations


def _partition_by_last_digit(invalidation: WorldInvalidation) -> int:
    return int(invalidation.id[-1]) % 2


def test_a_writes_invalidations_merge_into_one_valid_message_per_partition() -> None:
    sent = _ticked([f"w-{n}" for n in range(6)], checkpointed=True)
    merged = one_per_partition(sent, _partition_by_last_digit)
    assert [(p, m.id) for p, m in merged] == [(0, "world:w-0"), (1, "world:w-1")]
    for partition, message in merged:
        own = [i for i in sent if _partition_by_last_digit(i) == partition]
        # Every world's targets, in the order given; the contract's validation accepts it.
        assert message.keys == [k for i in own for k in i.keys]
        assert message.tags == [t for i in own for t in i.tags] == [i.id for i in own]
        assert message.reason.startswith("3 worlds changed in one write, the first: world w-")
        assert CacheInvalidation.model_validate_json(message.model_dump_json()) == message


def test_a_world_alone_in_its_partition_keeps_its_own_message() -> None:
    [only] = _ticked(["w-3"])
    [(partition, message)] = one_per_partition([only], _partition_by_last_digit)
    assert (partition, message) == (1, only.message())
    assert message.reason == "world w-3 changed (tick 1, version 2)"
    assert CacheInvalidation.model_validate_json(message.model_dump_json()) == message


def test_a_partitions_message_is_split_before_it_passes_the_merged_bound() -> None:
    sent = _ticked([f"w-{n}" for n in range(0, 200, 2)])  # all in partition 0
    merged = one_per_partition(sent, _partition_by_last_digit)
    assert len(merged) > 1
    assert {p for p, _ in merged} == {0}
    targets = [len(m.keys) + len(m.tags) + len(m.patterns) + len(m.urls) for _, m in merged]
    assert max(targets) <= MERGED_TARGETS
    # Nothing lost or reordered across the split.
    assert [k for _, m in merged for k in m.keys] == [k for i in sent for k in i.keys]


def test_a_world_with_more_targets_than_the_bound_goes_alone_and_whole() -> None:
    world = village("w-big")
    for number in range(300):
        world.npcs[f"x-{number}"] = Npc(f"x-{number}", "X")
    crowd = world.clone()
    for number in range(300):
        crowd.npcs[f"x-{number}"].name = "Y"
    crowd.version += 1
    [big] = invalidations_for(world, crowd, NOW)
    small = _ticked(["w-0", "w-2"])
    merged = one_per_partition([small[0], big, small[1]], lambda _: 0)
    assert [m.id for _, m in merged] == ["world:w-0", "world:w-big", "world:w-2"]
    assert merged[1][1] == big.message()
