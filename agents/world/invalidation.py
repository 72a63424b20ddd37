"""What a change to a world makes stale in the caches: the world's summary key, the cards of
NPCs whose visible state changed, the CDN images whose URL was replaced or removed and,
when its world_state row was rewritten, everything cached under the world's tag (the cache
client warms sections of that row).

An image is an AI-generated file behind its URL; it does not show a tick's state (where an NPC
is, what it does, a place's stock), so a tick purges no image. Purging them on each card change
cost about two CDN calls per world per tick, where Fastly takes one URL a call at 50 calls/s:
past a few dozen ticking worlds the invalidation flow fell behind without bound, holding the
Redis removals behind the CDN.

A write's invalidations leave as one message per partition of `cache.invalidations`
(`one_per_partition`), not one per world."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from agents.world.model import Location, Npc, WorldState
from schemas.events import CacheInvalidation

MAX_TARGETS = 1000  # CacheInvalidation's bound on keys and on urls
# The targets a round's message for one partition gathers from its worlds (about three each):
# enough that its fixed costs (building, sending, fetching, validating) are shared by dozens of
# worlds, few enough that a window of the invalidation flow's records stays as it was sized.
# Within every bound of the contract (1,000 keys or urls, 100 patterns or tags), so a merge
# never passes one.
MERGED_TARGETS = 100
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
        _replaced(_image(old), _image(new), urls)
    old_places = before.locations if before is not None else {}
    new_places = after.locations
    if old_places is not new_places:
        same_places = old_places.keys() == new_places.keys()
        for location_id in new_places if same_places else old_places.keys() | new_places:
            old_place, new_place = old_places.get(location_id), new_places.get(location_id)
            if old_place is not new_place:  # shared by a tick that did not change it
                _replaced(_image(old_place), _image(new_place), urls)
    _replaced(_image(before), after.image_url, urls)

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


def _image(shown: Npc | Location | WorldState | None) -> str | None:
    return shown.image_url if shown is not None else None


def _replaced(old_url: str | None, new_url: str | None, urls: set[str]) -> None:
    """An image replaced or removed purges its old URL and the new one (a CDN may have cached
    a miss for it). An image first set purges nothing: a world, NPC or place that did not
    show one had no URL for a CDN to have cached, so loading worlds costs no CDN call."""
    if old_url and old_url != new_url:
        urls.add(old_url)
        if new_url:
            urls.add(new_url)


def one_per_partition(
    invalidations: Sequence[CacheInvalidation], partition_of: Callable[[CacheInvalidation], int]
) -> list[tuple[int, CacheInvalidation]]:
    """A round's invalidations merged into one message per partition of `cache.invalidations`
    (more when one would pass `MERGED_TARGETS`), each world's in the order given: a message per
    world per tick made its fixed costs the larger part of the invalidations' share of a
    ticking worker. A merged message takes its first world's key, so it lands in the
    partition of every world in it (where each world's own messages go) and a replay of it
    keyed as it was lands there too."""
    groups: dict[int, list[list[CacheInvalidation]]] = {}
    sizes: dict[int, int] = {}
    for invalidation in invalidations:
        partition = partition_of(invalidation)
        size = _targets(invalidation)
        open_groups = groups.setdefault(partition, [])
        if open_groups and sizes[partition] + size <= MERGED_TARGETS:
            open_groups[-1].append(invalidation)
            sizes[partition] += size
        else:
            open_groups.append([invalidation])
            sizes[partition] = size
    return [
        (partition, _merged(group))
        for partition, partition_groups in groups.items()
        for group in partition_groups
    ]


def _targets(invalidation: CacheInvalidation) -> int:
    return (
        len(invalidation.keys)
        + len(invalidation.patterns)
        + len(invalidation.tags)
        + len(invalidation.urls)
    )


def _merged(group: list[CacheInvalidation]) -> CacheInvalidation:
    first = group[0]
    if len(group) == 1:
        return first
    return CacheInvalidation.model_construct(
        id=first.id,
        keys=[key for i in group for key in i.keys],
        patterns=[pattern for i in group for pattern in i.patterns],
        tags=[tag for i in group for tag in i.tags],
        urls=[url for i in group for url in i.urls],
        reason=f"{len(group)} worlds changed in one write, the first: {first.reason}",
        occurred_at=max(i.occurred_at for i in group),
        schema_version=_SCHEMA_VERSION,
    )
