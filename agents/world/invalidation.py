"""What a change to a world makes stale in the caches: the world's summary key, the cards of
NPCs whose visible state changed, the CDN images of what changed and, when its world_state row
was rewritten, everything cached under the world's tag (the cache client warms sections of
that row)."""

from __future__ import annotations

from datetime import datetime

from agents.world.model import WorldState
from schemas.events import CacheInvalidation

MAX_TARGETS = 1000  # CacheInvalidation's bound on keys and on urls
_SCHEMA_VERSION = CacheInvalidation.model_fields["schema_version"].default


def world_key(world_id: str) -> str:
    return f"world:{world_id}"


def world_tag(world_id: str) -> str:
    """The tag the cache client files a world's entries under (agents/invalidation)."""
    return f"world:{world_id}"


def npc_key(world_id: str, npc_id: str) -> str:
    return f"world:{world_id}:npc:{npc_id}"


def invalidations_for(
    before: WorldState | None,
    after: WorldState,
    occurred_at: datetime,
    checkpointed: bool = False,
) -> list[CacheInvalidation]:
    """The invalidations for a world that went from `before` (None: never stored) to `after`,
    keyed by the world; none when its version did not move. `checkpointed`: its world_state
    row now holds `after`."""
    if before is not None and before.version == after.version:
        return []
    world_id = after.world_id
    changed_npcs: list[str] = []
    urls: set[str] = set()
    # A tick changes no map's keys: walk one key set rather than the union of two.
    old_npcs = before.npcs if before is not None else {}
    new_npcs = after.npcs
    npc_ids = new_npcs.keys() if old_npcs.keys() == new_npcs.keys() else old_npcs.keys() | new_npcs
    for npc_id in sorted(npc_ids):
        old, new = old_npcs.get(npc_id), new_npcs.get(npc_id)
        if old is not None and new is not None and old.same_card(new):
            continue
        changed_npcs.append(npc_id)
        if old is not None and old.image_url:
            urls.add(old.image_url)
        if new is not None and new.image_url:
            urls.add(new.image_url)
    old_places = before.locations if before is not None else {}
    new_places = after.locations
    place_ids = (
        new_places.keys()
        if old_places.keys() == new_places.keys()
        else old_places.keys() | new_places
    )
    for location_id in place_ids:
        old_place, new_place = old_places.get(location_id), new_places.get(location_id)
        if old_place is new_place:
            continue  # shared by a tick that did not change it
        if old_place is None or new_place is None or not old_place.same(new_place):
            if old_place is not None and old_place.image_url:
                urls.add(old_place.image_url)
            if new_place is not None and new_place.image_url:
                urls.add(new_place.image_url)
    looks = (after.name, after.weather, after.image_url)
    if before is None or (before.name, before.weather, before.image_url) != looks:
        urls.update(w.image_url for w in (before, after) if w is not None and w.image_url)

    keys = [world_key(world_id)]
    patterns: list[str] = []
    if len(changed_npcs) < MAX_TARGETS:
        keys.extend(npc_key(world_id, npc_id) for npc_id in changed_npcs)
    else:
        patterns.append(npc_key(world_id, "*"))
    ordered_urls = sorted(urls)
    url_chunks = [
        ordered_urls[start : start + MAX_TARGETS]
        for start in range(0, len(ordered_urls), MAX_TARGETS)
    ] or [[]]
    reason = f"world {world_id} changed (tick {after.tick}, version {after.version})"
    # Built without validation (one per changed world per round): every field is made here
    # within the contract's bounds, and the invalidation flow validates what it reads.
    return [
        CacheInvalidation.model_construct(
            id=world_key(world_id),
            keys=keys if index == 0 else [],
            patterns=patterns if index == 0 else [],
            tags=[world_tag(world_id)] if index == 0 and checkpointed else [],
            urls=chunk,
            reason=reason,
            occurred_at=occurred_at,
            schema_version=_SCHEMA_VERSION,  # given, so no default is resolved per message
        )
        for index, chunk in enumerate(url_chunks)
    ]
