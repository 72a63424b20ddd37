from __future__ import annotations

import hashlib
from collections import Counter

import pytest

from agents.world.dice import Dice, TickSeeds


def test_same_seed_rolls_the_same_sequence() -> None:
    first, second = Dice("w-1", 7, "npc-1"), Dice("w-1", 7, "npc-1")
    assert [first.roll64() for _ in range(100)] == [second.roll64() for _ in range(100)]


@pytest.mark.parametrize(
    "other", [Dice("w-2", 7, "npc-1"), Dice("w-1", 8, "npc-1"), Dice("w-1", 7, "npc-2")]
)
def test_any_part_of_the_seed_changes_the_rolls(other: Dice) -> None:
    base = Dice("w-1", 7, "npc-1")
    assert [base.roll64() for _ in range(5)] != [other.roll64() for _ in range(5)]


def test_known_first_rolls_pin_the_algorithm() -> None:
    # Every stored world replays through these rolls: a change here changes every replay.
    dice = Dice("w-1", 7, "npc-1")
    assert [dice.below(1000) for _ in range(5)] == [911, 235, 709, 715, 594]


def test_bounds_hold() -> None:
    dice = Dice("w", 1)
    assert all(3 <= dice.between(3, 5) <= 5 for _ in range(1000))
    assert all(0 <= dice.below(7) < 7 for _ in range(1000))
    with pytest.raises(ValueError, match="positive"):
        dice.below(0)


def test_weighted_follows_the_weights_roughly() -> None:
    dice = Dice("w", 1)
    seen = Counter(dice.weighted([("a", 900), ("b", 100), ("never", 0)]) for _ in range(5000))
    assert seen["never"] == 0
    assert 4200 < seen["a"] < 4800


@pytest.mark.parametrize("stream", ["", "weather", "npc-1", "nǐ-hǎo", "x" * 200])
def test_a_ticks_seeds_roll_what_a_die_seeded_whole_rolls(stream: str) -> None:
    # step seeds each NPC's dice from one hashed prefix per tick: the rolls, and so every
    # stored world's replay, must be those of hashing the whole seed.
    whole, from_prefix = Dice("w-1", 7, stream), TickSeeds("w-1", 7).dice(stream)
    assert [whole.roll64() for _ in range(20)] == [from_prefix.roll64() for _ in range(20)]
    expected = hashlib.sha256(f"w-1\x007\x00{stream}".encode()).digest()
    assert TickSeeds("w-1", 7).dice(stream)._state == int.from_bytes(expected[:8], "big")
