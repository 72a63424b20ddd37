"""Redis glob semantics in Python; tests/cache/test_client.py checks them against Redis."""

from __future__ import annotations

import pytest

from cache.patterns import glob_matches

CASES = [
    ("world:*", "world:1", True),
    ("world:*", "world:", True),
    ("world:*", "worlds:1", False),
    ("user:?", "user:7", True),
    ("user:?", "user:77", False),
    ("npc:[abc]", "npc:b", True),
    ("npc:[abc]", "npc:d", False),
    ("npc:[^abc]", "npc:d", True),
    ("npc:[^abc]", "npc:a", False),
    ("npc:[a-c]x", "npc:bx", True),
    ("npc:[c-a]x", "npc:bx", True),
    ("npc:[a-c]x", "npc:dx", False),
    (r"lit\*eral", "lit*eral", True),
    (r"lit\*eral", "litXeral", False),
    (r"br[\]]", "br]", True),
    ("dot.star", "dotXstar", False),
    ("a*b*c", "aXXbYYc", True),
    ("a*b*c", "aXXbYY", False),
    ("*", "anything:at:all", True),
    ("multi\nline*", "multi\nline-x", True),
]


@pytest.mark.parametrize(("pattern", "key", "expected"), CASES)
def test_redis_glob(pattern: str, key: str, expected: bool) -> None:
    assert glob_matches(pattern, key) is expected


def test_redis_matches_bytes_not_characters() -> None:
    assert not glob_matches("k:?", "k:é")
    assert glob_matches("k:??", "k:é")
