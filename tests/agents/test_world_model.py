from __future__ import annotations

from dataclasses import fields
from typing import Any

import orjson

from agents.world.model import (
    Clock,
    Location,
    WorldState,
    canonical_json,
    state_from_json,
    state_hash,
)
from agents.world.step import step
from schemas.world import LocationKind
from tests.agents.world_fixtures import village


def test_canonical_json_round_trips_byte_for_byte() -> None:
    world = village()
    assert canonical_json(state_from_json(canonical_json(world))) == canonical_json(world)


def test_key_order_of_the_source_does_not_matter() -> None:
    """A snapshot read back from jsonb has its keys in another order; it must be the same
    state and must step the same way."""
    world = village()
    for tick in range(1, 40):
        world, _ = step(world, tick)
    reordered = _reverse_keys(orjson.loads(canonical_json(world)))
    restored = WorldState.from_dict(reordered)
    assert state_hash(restored) == state_hash(world)
    assert state_hash(step(restored, 40)[0]) == state_hash(step(world, 40)[0])


def _reverse_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _reverse_keys(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [_reverse_keys(v) for v in value]
    return value


def test_clone_is_independent() -> None:
    world = village()
    for tick in range(1, 30):
        world, _ = step(world, tick)
    copy = world.clone()
    assert canonical_json(copy) == canonical_json(world)
    assert copy == WorldState.from_dict(world.to_dict())
    copy.npcs["npc-1"].inventory["grain"] = 99
    copy.market.prices["grain"] = 77
    assert "grain" not in world.npcs["npc-1"].inventory
    assert world.market.prices["grain"] != 77


def test_hash_is_sha256_of_the_canonical_json() -> None:
    import hashlib

    world = village()
    assert state_hash(world) == hashlib.sha256(canonical_json(world)).hexdigest()
    assert len(state_hash(world)) == 64


def test_image_urls_lists_world_npc_and_location_images() -> None:
    urls = village("w-img").image_urls()
    base = "https://cdn.scribe.invalid/worlds/w-img"
    assert f"{base}/world.png" in urls
    assert f"{base}/npcs/npc-1.png" in urls
    assert f"{base}/locations/tavern.png" in urls
    assert urls == sorted(urls)


def test_clock_counts_ten_minute_ticks() -> None:
    assert str(Clock(0)) == "day 1, 00:00"
    assert str(Clock(6 * 13 + 3)) == "day 1, 13:30"
    assert str(Clock(144 + 1)) == "day 2, 00:10"
    assert Clock(6 * 23).is_night and not Clock(6 * 12).is_night


def test_locations_are_the_same_exactly_when_equal() -> None:
    place = village("w-same").locations["market"]
    assert place.same(place.copy())
    changes: dict[str, Any] = {
        "location_id": "elsewhere",
        "name": "Another",
        "kind": LocationKind.MINE,
        "capacity": place.capacity + 1,
        "stock": {**place.stock, "grain": place.stock.get("grain", 0) + 1},
        "image_url": "https://cdn.scribe.invalid/other.png",
    }
    assert set(changes) == {f.name for f in fields(Location)}  # every field is compared
    for name, value in changes.items():
        other = place.copy()
        setattr(other, name, value)
        assert not place.same(other), name
        assert place != other
