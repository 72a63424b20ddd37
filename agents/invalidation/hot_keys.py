"""Which cache entries a loaded world makes hot, computed from its `world_state` row. Pure.

The row shape is the world flow's: `world_state(world_id, version, tick, state jsonb,
state_hash, updated_at)`. App code reads a world through the cache client at `world:<id>`
(the whole document) and `world:<id>:state:<section>` (one top-level section of the state);
all of them carry the tag `world:<id>`, so one tag invalidation drops them together.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import orjson

from schemas.events import WorldEvent

WORLD_LOADED = "world_loaded"
_SECTION = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


def world_key(world_id: str) -> str:
    return f"world:{world_id}"


def world_tag(world_id: str) -> str:
    return f"world:{world_id}"


def section_key(world_id: str, section: str) -> str:
    return f"world:{world_id}:state:{section}"


def worlds_to_warm(events: Iterable[WorldEvent]) -> list[str]:
    """The worlds named by `world_loaded` events, each once, in order."""
    return list(dict.fromkeys(e.world_id for e in events if e.type == WORLD_LOADED))


def hot_entries(row: Mapping[str, Any]) -> dict[str, Any]:
    """Cache key -> JSON value for one world_state row."""
    world_id = str(row["world_id"])
    state = row["state"]
    if isinstance(state, str | bytes):
        state = orjson.loads(state)
    updated_at = row.get("updated_at")
    document = {
        "world_id": world_id,
        "version": row["version"],
        "tick": row["tick"],
        "state_hash": row.get("state_hash"),
        "updated_at": updated_at.isoformat() if isinstance(updated_at, datetime) else updated_at,
        "state": state,
    }
    entries: dict[str, Any] = {world_key(world_id): document}
    if isinstance(state, dict):
        for section, value in state.items():
            if isinstance(section, str) and _SECTION.match(section):
                entries[section_key(world_id, section)] = value
    return entries
