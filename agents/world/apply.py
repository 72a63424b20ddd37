"""`apply_event(state, event)`: what a player's or the AI's world event does to a world.

Pure, like the step. Each event type has a rule; its payload model is part of the contract
(`schemas.world`), so the event arrives with its payload already validated. An event that
breaks a rule of the world (an NPC that does not exist, a location created twice) is
`Rejected` with a reason for the dead-letter topic. An event already applied, by id or by
producer version, is a `Duplicate` and changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from agents.world.genesis import generate
from agents.world.model import (
    RECENT_EVENT_IDS,
    DerivedEvent,
    Faction,
    Item,
    Location,
    Npc,
    WorldState,
)
from schemas.events import WorldEvent
from schemas.world import (
    RELATIONSHIP_LIMIT,
    FactionChanged,
    ItemCreated,
    LocationCreated,
    MemoryRecorded,
    NpcCreated,
    NpcMoved,
    RelationshipChanged,
    WorldLoaded,
    WorldPayload,
    WorldUnloaded,
)


class WorldRuleError(ValueError):
    """The event is well-formed but does not fit this world (e.g. it names a missing NPC)."""


@dataclass(frozen=True)
class Applied:
    state: WorldState
    derived: list[DerivedEvent]


@dataclass(frozen=True)
class Duplicate:
    reason: str


@dataclass(frozen=True)
class Rejected:
    kind: Literal["unknown_type", "payload"]
    reason: str


Outcome = Applied | Duplicate | Rejected


def is_duplicate(state: WorldState, event: WorldEvent) -> str | None:
    """Why `event` was already applied to `state`, or None."""
    if event.event_id in state.recent_event_ids:
        return f"event {event.event_id} was already applied"
    if event.version is not None and event.version <= state.event_version:
        return (
            f"event {event.event_id} has version {event.version}; the world has applied up "
            f"to version {state.event_version}"
        )
    return None


def apply_event(state: WorldState, event: WorldEvent) -> Outcome:
    """The world after `event`, or why the event changes nothing; `state` is not changed."""
    if event.world_id != state.world_id:
        raise ValueError(f"event for world {event.world_id} applied to world {state.world_id}")
    duplicate = is_duplicate(state, event)
    if duplicate:
        return Duplicate(duplicate)
    rule = _RULES.get(event.type)
    if rule is None:
        known = ", ".join(sorted(_RULES))
        return Rejected("unknown_type", f"unknown world event type {event.type!r}; known: {known}")
    model, change = rule
    if not isinstance(event.payload, model):
        kind = type(event.payload).__name__
        return Rejected("payload", f"{event.type}: the payload is a {kind}, not a {model.__name__}")
    world = state.clone()
    try:
        derived = change(world, event.payload)
    except WorldRuleError as exc:
        return Rejected("payload", f"{event.type}: {exc}")
    world.version += 1
    world.recent_event_ids = [*world.recent_event_ids, event.event_id][-RECENT_EVENT_IDS:]
    if event.version is not None:
        world.event_version = event.version
    return Applied(world, derived)


@dataclass(frozen=True)
class RecordedMemory:
    memory_id: str
    npc_id: str | None
    content: str
    importance: int


def recorded_memory(event: WorldEvent) -> RecordedMemory | None:
    """The memory an applied `memory_recorded` event stores (its id defaults to the event's)."""
    payload = event.payload
    if not isinstance(payload, MemoryRecorded):
        return None
    return RecordedMemory(
        payload.memory_id or event.event_id, payload.npc_id, payload.content, payload.importance
    )


# -- the rules ----------------------------------------------------------------------------


def _need(mapping: dict[str, Any], key: str | None, what: str, world: WorldState) -> None:
    if key is not None and key not in mapping:
        raise WorldRuleError(f"{what} {key!r} does not exist in world {world.world_id}")


def _world_loaded(world: WorldState, p: WorldLoaded) -> list[DerivedEvent]:
    world.loaded = True
    if p.name:
        world.name = p.name
    if p.image_url:
        world.image_url = p.image_url
    if p.template and not world.locations and not world.npcs:
        npcs = generate(world, p.template, p.image_base_url)
        payload = {"template": p.template, "locations": len(world.locations), "npcs": npcs}
        return [DerivedEvent("world_generated", payload)]
    return []


def _world_unloaded(world: WorldState, p: WorldUnloaded) -> list[DerivedEvent]:
    world.loaded = False
    return []


def _location_created(world: WorldState, p: LocationCreated) -> list[DerivedEvent]:
    if p.location_id in world.locations:
        raise WorldRuleError(f"location {p.location_id!r} already exists")
    world.locations[p.location_id] = Location(
        location_id=p.location_id,
        name=p.name,
        kind=p.kind,
        capacity=p.capacity,
        stock={resource.value: amount for resource, amount in sorted(p.stock.items()) if amount},
        image_url=p.image_url,
    )
    return []


def _npc_created(world: WorldState, p: NpcCreated) -> list[DerivedEvent]:
    if p.npc_id in world.npcs:
        raise WorldRuleError(f"npc {p.npc_id!r} already exists")
    for key in (p.location_id, p.home_id, p.work_id):
        _need(world.locations, key, "location", world)
    _need(world.factions, p.faction_id, "faction", world)
    location = p.location_id or p.home_id or next(iter(sorted(world.locations)), None)
    world.npcs[p.npc_id] = Npc(
        npc_id=p.npc_id,
        name=p.name,
        location_id=location,
        home_id=p.home_id or location,
        work_id=p.work_id,
        faction_id=p.faction_id,
        hunger=p.hunger,
        energy=p.energy,
        wealth=p.wealth,
        image_url=p.image_url,
    )
    return []


def _npc_moved(world: WorldState, p: NpcMoved) -> list[DerivedEvent]:
    _need(world.npcs, p.npc_id, "npc", world)
    _need(world.locations, p.location_id, "location", world)
    world.npcs[p.npc_id].location_id = p.location_id
    return []


def _item_created(world: WorldState, p: ItemCreated) -> list[DerivedEvent]:
    if p.item_id in world.items:
        raise WorldRuleError(f"item {p.item_id!r} already exists")
    if p.location_id and p.owner_id:
        raise WorldRuleError("an item is either at a location or owned by an NPC, not both")
    _need(world.locations, p.location_id, "location", world)
    _need(world.npcs, p.owner_id, "npc", world)
    world.items[p.item_id] = Item(p.item_id, p.name, p.value, p.location_id, p.owner_id)
    return []


def _faction_changed(world: WorldState, p: FactionChanged) -> list[DerivedEvent]:
    for npc_id in (*p.join, *p.leave):
        _need(world.npcs, npc_id, "npc", world)
    for other in p.attitudes:
        if other != p.faction_id:
            _need(world.factions, other, "faction", world)
    faction = world.factions.get(p.faction_id) or Faction(p.faction_id, p.name or p.faction_id)
    if faction.treasury + p.treasury_delta < 0:
        raise WorldRuleError(
            f"faction {p.faction_id!r} holds {faction.treasury} coins; cannot take "
            f"{-p.treasury_delta}"
        )
    faction.name = p.name or faction.name
    faction.treasury += p.treasury_delta
    faction.reputation = max(-100, min(100, faction.reputation + p.reputation_delta))
    for other, attitude in sorted(p.attitudes.items()):
        if other != p.faction_id:
            faction.attitudes[other] = attitude
    world.factions[p.faction_id] = faction
    for npc_id in p.leave:
        if world.npcs[npc_id].faction_id == p.faction_id:
            world.npcs[npc_id].faction_id = None
    for npc_id in p.join:
        world.npcs[npc_id].faction_id = p.faction_id
    return []


def _memory_recorded(world: WorldState, p: MemoryRecorded) -> list[DerivedEvent]:
    _need(world.npcs, p.npc_id, "npc", world)
    world.memories += 1
    if p.npc_id is not None:
        world.npcs[p.npc_id].memories += 1
    return []


def _relationship_changed(world: WorldState, p: RelationshipChanged) -> list[DerivedEvent]:
    _need(world.npcs, p.npc_id, "npc", world)
    _need(world.npcs, p.other_npc_id, "npc", world)
    if p.npc_id == p.other_npc_id:
        raise WorldRuleError("an NPC has no relationship with itself")
    npc = world.npcs[p.npc_id]
    before = npc.relationships.get(p.other_npc_id, 0)
    after = max(-RELATIONSHIP_LIMIT, min(RELATIONSHIP_LIMIT, before + p.delta))
    npc.relationships[p.other_npc_id] = after
    return []


Rule = tuple[type[WorldPayload], Callable[[WorldState, Any], list[DerivedEvent]]]
_RULES: dict[str, Rule] = {
    "world_loaded": (WorldLoaded, _world_loaded),
    "world_unloaded": (WorldUnloaded, _world_unloaded),
    "location_created": (LocationCreated, _location_created),
    "npc_created": (NpcCreated, _npc_created),
    "npc_moved": (NpcMoved, _npc_moved),
    "item_created": (ItemCreated, _item_created),
    "faction_changed": (FactionChanged, _faction_changed),
    "memory_recorded": (MemoryRecorded, _memory_recorded),
    "relationship_changed": (RelationshipChanged, _relationship_changed),
}
EVENT_TYPES = tuple(sorted(_RULES))
