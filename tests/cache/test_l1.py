from __future__ import annotations

import pytest

from cache.l1 import L1Cache


def test_hit_until_expiry() -> None:
    l1 = L1Cache()
    l1.put("k", {"v": 1}, expires_at=10.0)
    assert l1.get("k", now=9.9) == (True, {"v": 1})
    assert l1.get("k", now=10.0) == (False, None)
    assert "k" not in l1


def test_least_recently_used_entry_is_evicted() -> None:
    l1 = L1Cache(max_entries=2)
    l1.put("a", 1, 100)
    l1.put("b", 2, 100)
    assert l1.get("a", 0) == (True, 1)  # a is now more recent than b
    l1.put("c", 3, 100)
    assert "b" not in l1
    assert {"a", "c"} <= {k for k in ("a", "b", "c") if k in l1}


def test_drop_by_key_pattern_and_tag() -> None:
    l1 = L1Cache()
    l1.put("world:1", "w1", 100, tags=["world:1"])
    l1.put("world:1:state:npcs", "npcs", 100, tags=["world:1"])
    l1.put("world:2", "w2", 100, tags=["world:2"])
    l1.put("user:1", "u1", 100)
    l1.put("user:2", "u2", 100)
    assert l1.drop(tags=["world:1"]) == 2
    assert l1.drop(patterns=["user:*"]) == 2
    assert l1.drop(keys=["world:2", "absent"]) == 1
    assert len(l1) == 0


def test_replacing_an_entry_updates_its_tags() -> None:
    l1 = L1Cache()
    l1.put("k", 1, 100, tags=["old"])
    l1.put("k", 2, 100, tags=["new"])
    assert l1.drop(tags=["old"]) == 0
    assert l1.drop(tags=["new"]) == 1


def test_evicted_entries_leave_the_tag_index() -> None:
    l1 = L1Cache(max_entries=1)
    l1.put("a", 1, 100, tags=["t"])
    l1.put("b", 2, 100)
    assert l1.drop(tags=["t"]) == 0
    assert "b" in l1


def test_needs_room() -> None:
    with pytest.raises(ValueError, match="at least one"):
        L1Cache(max_entries=0)
