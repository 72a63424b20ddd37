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
(`one_per_partition`), not one per world. Until then each world's is a plain record
(`WorldInvalidation`): a worker makes one per changed world per write, and a pydantic model
for each was about a quarter of their cost."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
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


@dataclass(slots=True)
class WorldInvalidation:
    """What one world's change made stale, keyed by the world: its fields are
    `CacheInvalidation`'s, made within the contract's bounds (`message`)."""

    world_id: str
    keys: list[str]
    patterns: list[str]
    tags: list[str]
    urls: list[str]
    tick: int
    version: int
    occurred_at: datetime

    @property
    def id(self) -> str:
        return world_key(self.world_id)

    @property
    def reason(self) -> str:
        return f"world {self.world_id} changed (tick {self.tick}, version {self.version})"

    def targets(self) -> int:
        return len(self.keys) + len(self.patterns) + len(self.tags) + len(self.urls)

    def message(self, reason: str | None = None) -> CacheInvalidation:
        """`reason`: a merged message's own (default: this world's)."""
        # Built without validation: every field is made here within the contract's bounds,
        # and the invalidation flow validates what it reads.
        return CacheInvalidation.model_construct(
            id=self.id,
            keys=self.keys,
            patterns=self.patterns,
            tags=self.tags,
            urls=self.urls,
            reason=reason or self.reason,
            occurred_at=self.occurred_at,
            schema_version=_SCHEMA_VERSION,  # given, so no default is resolved per message
        )


def invalidations_for(
    before: WorldState | None,
    after: WorldState,
    occurred_at: datetime,
    checkpointed: bool = False,
) -> list[WorldInvalidation]:
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
    for npc_id in npc_ids:
        old, new = old_npcs.get(npc_id), new_npcs.get(npc_id)
        if old is not None and new is not None and old.same_card(new):
            continue
        changed_npcs.append(npc_id)
        _replaced(_image(old), _image(new), urls)
    changed_npcs.sort()  # the few that changed, not every NPC
    old_places = before.locations if before is not None else {}
    new_places = after.locations
    if old_places.keys() == new_places.keys():
        for location_id, new_place in new_places.items():
            old_place = old_places[location_id]
            # Most are shared by a tick that did not change them: no image to compare.
            if old_place is not new_place and old_place.image_url != new_place.image_url:
                _replaced(old_place.image_url, new_place.image_url, urls)
    else:
        for location_id in old_places.keys() | new_places:
            was, now = old_places.get(location_id), new_places.get(location_id)
            _replaced(_image(was), _image(now), urls)
    _replaced(_image(before), after.image_url, urls)

    keys = [world_key(world_id)]
    patterns: list[str] = []
    if len(changed_npcs) < MAX_TARGETS:
        card_prefix = npc_key(world_id, "")
        keys += [card_prefix + npc_id for npc_id in changed_npcs]
    else:
        patterns.append(npc_key(world_id, "*"))
    ordered_urls = sorted(urls)
    url_chunks = [
        ordered_urls[start : start + MAX_TARGETS]
        for start in range(0, len(ordered_urls), MAX_TARGETS)
    ] or [[]]
    return [
        WorldInvalidation(
            world_id,
            keys if index == 0 else [],
            patterns if index == 0 else [],
            [world_tag(world_id)] if index == 0 and checkpointed else [],
            chunk,
            after.tick,
            after.version,
            occurred_at,
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
    invalidations: Sequence[WorldInvalidation], partition_of: Callable[[WorldInvalidation], int]
) -> list[tuple[int, CacheInvalidation]]:
    """A round's invalidations merged into one message per partition of `cache.invalidations`
    (more when one would pass `MERGED_TARGETS`), each world's in the order given: a message per
    world per tick made its fixed costs the larger part of the invalidations' share of a
    ticking worker. A merged message takes its first world's key, so it lands in the
    partition of every world in it (where each world's own messages go) and a replay of it
    keyed as it was lands there too."""
    groups: dict[int, list[list[WorldInvalidation]]] = {}
    sizes: dict[int, int] = {}
    for invalidation in invalidations:
        partition = partition_of(invalidation)
        size = invalidation.targets()
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


def _merged(group: list[WorldInvalidation]) -> CacheInvalidation:
    first = group[0]
    if len(group) == 1:
        return first.message()
    merged = WorldInvalidation(
        first.world_id,
        [key for i in group for key in i.keys],
        [pattern for i in group for pattern in i.patterns],
        [tag for i in group for tag in i.tags],
        [url for i in group for url in i.urls],
        first.tick,
        first.version,
        max(i.occurred_at for i in group),
    )
    return merged.message(f"{len(group)} worlds changed in one write, the first: {first.reason}")
