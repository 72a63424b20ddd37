"""The state of one world: plain data with one canonical JSON form and a hash over it.

Integers only (needs are per-mille, money is whole coins, time is counted in ticks), strings,
booleans and None: nothing whose formatting could differ between a live worker and a replay.
Maps are serialized with sorted keys, and the step iterates them sorted, so a state restored
from a snapshot behaves exactly like the one that was saved.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import orjson

from schemas.world import LocationKind, Resource

MINUTES_PER_TICK = 10
TICKS_PER_HOUR = 60 // MINUTES_PER_TICK
TICKS_PER_DAY = 24 * TICKS_PER_HOUR
NEED_MAX = 1000
# Event ids remembered in the state itself, so applying an event twice changes nothing even
# without a database; older duplicates are caught by the owner's lookup in `world_event_ids`.
RECENT_EVENT_IDS = 64


class Weather(StrEnum):
    CLEAR = "clear"
    CLOUDY = "cloudy"
    RAIN = "rain"
    STORM = "storm"
    FOG = "fog"


class Activity(StrEnum):
    IDLE = "idle"
    SLEEPING = "sleeping"
    EATING = "eating"
    WORKING = "working"
    SOCIALIZING = "socializing"
    HUNGRY = "hungry"


FOODS = (Resource.GRAIN, Resource.FISH)
PRODUCES: dict[LocationKind, Resource] = {
    LocationKind.FARM: Resource.GRAIN,
    LocationKind.HARBOR: Resource.FISH,
    LocationKind.FOREST: Resource.WOOD,
    LocationKind.MINE: Resource.ORE,
}


@dataclass(slots=True)
class Location:
    location_id: str
    name: str
    kind: LocationKind
    capacity: int = 50
    stock: dict[str, int] = field(default_factory=dict)
    image_url: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "location_id": self.location_id,
            "name": self.name,
            "kind": self.kind.value,
            "capacity": self.capacity,
            "stock": dict(self.stock),
            "image_url": self.image_url,
        }

    def same(self, other: Location) -> bool:
        """Equal field by field (the dataclass `==` builds a tuple of each side first)."""
        return (
            self.stock == other.stock
            and self.capacity == other.capacity
            and self.image_url == other.image_url
            and self.name == other.name
            and self.kind == other.kind
            and self.location_id == other.location_id
        )

    def copy(self) -> Location:
        return Location(
            self.location_id, self.name, self.kind, self.capacity, dict(self.stock), self.image_url
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Location:
        return cls(
            location_id=data["location_id"],
            name=data["name"],
            kind=LocationKind(data["kind"]),
            capacity=data["capacity"],
            stock=dict(data["stock"]),
            image_url=data["image_url"],
        )


@dataclass(slots=True)
class Npc:
    npc_id: str
    name: str
    location_id: str | None = None
    home_id: str | None = None
    work_id: str | None = None
    faction_id: str | None = None
    activity: Activity = Activity.IDLE
    hunger: int = 200
    energy: int = 800
    wealth: int = 20
    inventory: dict[str, int] = field(default_factory=dict)
    relationships: dict[str, int] = field(default_factory=dict)
    memories: int = 0
    image_url: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "npc_id": self.npc_id,
            "name": self.name,
            "location_id": self.location_id,
            "home_id": self.home_id,
            "work_id": self.work_id,
            "faction_id": self.faction_id,
            "activity": self.activity.value,
            "hunger": self.hunger,
            "energy": self.energy,
            "wealth": self.wealth,
            "inventory": dict(self.inventory),
            "relationships": dict(self.relationships),
            "memories": self.memories,
            "image_url": self.image_url,
        }

    def copy(self, share_maps: bool = False) -> Npc:
        """`share_maps`: the copy holds the same inventory and relationships dicts, which its
        user must copy before changing (see `WorldState.clone`)."""
        return Npc(
            self.npc_id,
            self.name,
            self.location_id,
            self.home_id,
            self.work_id,
            self.faction_id,
            self.activity,
            self.hunger,
            self.energy,
            self.wealth,
            self.inventory if share_maps else dict(self.inventory),
            self.relationships if share_maps else dict(self.relationships),
            self.memories,
            self.image_url,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Npc:
        return cls(
            npc_id=data["npc_id"],
            name=data["name"],
            location_id=data["location_id"],
            home_id=data["home_id"],
            work_id=data["work_id"],
            faction_id=data["faction_id"],
            activity=Activity(data["activity"]),
            hunger=data["hunger"],
            energy=data["energy"],
            wealth=data["wealth"],
            inventory=dict(data["inventory"]),
            relationships=dict(data["relationships"]),
            memories=data["memories"],
            image_url=data["image_url"],
        )

    def same_card(self, other: Npc) -> bool:
        """Whether a cached NPC card (name, place, faction, activity, image, relationships)
        would show the same; needs drift every tick and are not cached."""
        return (
            self.name == other.name
            and self.location_id == other.location_id
            and self.faction_id == other.faction_id
            and self.activity == other.activity
            and self.image_url == other.image_url
            # Shared by a tick that did not change them (`WorldState.clone`).
            and (
                self.relationships is other.relationships
                or self.relationships == other.relationships
            )
        )


@dataclass(slots=True)
class Faction:
    faction_id: str
    name: str
    treasury: int = 0
    reputation: int = 0
    attitudes: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "faction_id": self.faction_id,
            "name": self.name,
            "treasury": self.treasury,
            "reputation": self.reputation,
            "attitudes": dict(self.attitudes),
        }

    def copy(self) -> Faction:
        return Faction(
            self.faction_id, self.name, self.treasury, self.reputation, dict(self.attitudes)
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Faction:
        return cls(
            faction_id=data["faction_id"],
            name=data["name"],
            treasury=data["treasury"],
            reputation=data["reputation"],
            attitudes=dict(data["attitudes"]),
        )


@dataclass(slots=True)
class Item:
    item_id: str
    name: str
    value: int = 0
    location_id: str | None = None
    owner_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "item_id": self.item_id,
            "name": self.name,
            "value": self.value,
            "location_id": self.location_id,
            "owner_id": self.owner_id,
        }

    def copy(self) -> Item:
        return Item(self.item_id, self.name, self.value, self.location_id, self.owner_id)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Item:
        return cls(
            item_id=data["item_id"],
            name=data["name"],
            value=data["value"],
            location_id=data["location_id"],
            owner_id=data["owner_id"],
        )


BASE_PRICES: dict[str, int] = {"grain": 4, "fish": 5, "wood": 3, "ore": 8}


def _starting_prices() -> dict[str, int]:
    return dict(BASE_PRICES)


@dataclass(slots=True)
class Market:
    """One market per world: prices follow stock, coins are paid in and out of `treasury`."""

    prices: dict[str, int] = field(default_factory=_starting_prices)
    stock: dict[str, int] = field(default_factory=lambda: {r.value: 10 for r in Resource})
    treasury: int = 500

    def to_dict(self) -> dict[str, Any]:
        return {"prices": dict(self.prices), "stock": dict(self.stock), "treasury": self.treasury}

    def copy(self) -> Market:
        return Market(dict(self.prices), dict(self.stock), self.treasury)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Market:
        return cls(
            prices=dict(data["prices"]), stock=dict(data["stock"]), treasury=data["treasury"]
        )


@dataclass(slots=True)
class WorldState:
    """`version` counts the inputs applied (events and ticks): the world's log position."""

    world_id: str
    name: str = ""
    version: int = 0
    tick: int = 0
    event_version: int = 0
    loaded: bool = False
    weather: Weather = Weather.CLEAR
    image_url: str | None = None
    locations: dict[str, Location] = field(default_factory=dict)
    npcs: dict[str, Npc] = field(default_factory=dict)
    factions: dict[str, Faction] = field(default_factory=dict)
    items: dict[str, Item] = field(default_factory=dict)
    market: Market = field(default_factory=Market)
    memories: int = 0
    recent_event_ids: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "world_id": self.world_id,
            "name": self.name,
            "version": self.version,
            "tick": self.tick,
            "event_version": self.event_version,
            "loaded": self.loaded,
            "weather": self.weather.value,
            "image_url": self.image_url,
            "locations": {k: v.to_dict() for k, v in self.locations.items()},
            "npcs": {k: v.to_dict() for k, v in self.npcs.items()},
            "factions": {k: v.to_dict() for k, v in self.factions.items()},
            "items": {k: v.to_dict() for k, v in self.items.items()},
            "market": self.market.to_dict(),
            "memories": self.memories,
            "recent_event_ids": list(self.recent_event_ids),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WorldState:
        # Maps are rebuilt in sorted order, whatever order the source (e.g. jsonb) used.
        return cls(
            world_id=data["world_id"],
            name=data["name"],
            version=data["version"],
            tick=data["tick"],
            event_version=data["event_version"],
            loaded=data["loaded"],
            weather=Weather(data["weather"]),
            image_url=data["image_url"],
            locations={
                k: Location.from_dict(data["locations"][k]) for k in sorted(data["locations"])
            },
            npcs={k: Npc.from_dict(data["npcs"][k]) for k in sorted(data["npcs"])},
            factions={k: Faction.from_dict(data["factions"][k]) for k in sorted(data["factions"])},
            items={k: Item.from_dict(data["items"][k]) for k in sorted(data["items"])},
            market=Market.from_dict(data["market"]),
            memories=data["memories"],
            recent_event_ids=list(data["recent_event_ids"]),
        )

    def clone(self, copy_on_write: bool = False) -> WorldState:
        """A deep copy, so `step` and `apply_event` never change the state they were given.
        Maps are copied in sorted order, as `from_dict` builds them. `copy_on_write`: the
        copy holds the same `Location` objects and NPC inventory and relationship dicts (a
        tick changes few of them); its user must copy one before changing it (`step` does),
        so a stepped-from state never changes and one still shared did not change."""
        locations = self.locations
        return WorldState(
            self.world_id,
            self.name,
            self.version,
            self.tick,
            self.event_version,
            self.loaded,
            self.weather,
            self.image_url,
            {k: locations[k] for k in sorted(locations)}
            if copy_on_write
            else {k: locations[k].copy() for k in sorted(locations)},
            {k: self.npcs[k].copy(copy_on_write) for k in sorted(self.npcs)},
            {k: self.factions[k].copy() for k in sorted(self.factions)},
            {k: self.items[k].copy() for k in sorted(self.items)},
            self.market.copy(),
            self.memories,
            list(self.recent_event_ids),
        )

    def image_urls(self) -> list[str]:
        """Every CDN URL this world's images live at, sorted."""
        urls = {self.image_url} if self.image_url else set()
        urls.update(n.image_url for n in self.npcs.values() if n.image_url)
        urls.update(loc.image_url for loc in self.locations.values() if loc.image_url)
        return sorted(urls)


def canonical_json(state: WorldState) -> bytes:
    """The one byte form of a state: sorted keys, compact, integers only."""
    return orjson.dumps(state.to_dict(), option=orjson.OPT_SORT_KEYS)


def state_hash(state: WorldState) -> str:
    return hashlib.sha256(canonical_json(state)).hexdigest()


def state_from_json(raw: bytes | str) -> WorldState:
    return WorldState.from_dict(orjson.loads(raw))


@dataclass(frozen=True, slots=True)
class Clock:
    """In-world time derived from the tick number: a tick is ten in-world minutes."""

    tick: int

    @property
    def day(self) -> int:
        return self.tick // TICKS_PER_DAY + 1

    @property
    def minute_of_day(self) -> int:
        return (self.tick % TICKS_PER_DAY) * MINUTES_PER_TICK

    @property
    def hour(self) -> int:
        return self.minute_of_day // 60

    @property
    def is_night(self) -> bool:
        return self.hour >= 22 or self.hour < 6

    @property
    def is_work_hours(self) -> bool:
        return 8 <= self.hour < 18

    def __str__(self) -> str:
        return f"day {self.day}, {self.hour:02d}:{self.minute_of_day % 60:02d}"


@dataclass(frozen=True, slots=True)
class DerivedEvent:
    """Something the simulation caused (an NPC moved, a trade, the weather turned): stored in
    `world_events` beside the input that caused it, never applied again on replay."""

    type: str
    payload: dict[str, Any]
