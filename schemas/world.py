"""The payload of each world event type: the part of the `world.events` contract that says
what `location_created`, `npc_moved` and the others carry.

`PAYLOADS` maps every event type to its payload model (unknown fields refused); the world
flow applies them and `schemas.events.WorldEvent` validates each event's payload by its type.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    StringConstraints,
    model_serializer,
)

from schemas.fields import Identifier, Label, Url

# How far one NPC may like (or dislike) another, and one faction another.
RELATIONSHIP_LIMIT = 100


class LocationKind(StrEnum):
    SQUARE = "square"
    TAVERN = "tavern"
    MARKET = "market"
    TEMPLE = "temple"
    HOME = "home"
    FARM = "farm"
    FOREST = "forest"
    MINE = "mine"
    HARBOR = "harbor"


class Resource(StrEnum):
    GRAIN = "grain"
    FISH = "fish"
    WOOD = "wood"
    ORE = "ore"


Quantity = Annotated[int, Field(strict=True, ge=0, le=1_000_000)]
Delta = Annotated[int, Field(strict=True, ge=-1_000_000, le=1_000_000)]
Need = Annotated[int, Field(strict=True, ge=0, le=1000)]
Attitude = Annotated[int, Field(strict=True, ge=-RELATIONSHIP_LIMIT, le=RELATIONSHIP_LIMIT)]


def _no_nul(text: str) -> str:
    # PostgreSQL text and jsonb cannot hold U+0000; refuse it here rather than at the sink.
    if "\x00" in text:
        raise ValueError("text must not contain the NUL character")
    return text


MemoryText = Annotated[
    str,
    StringConstraints(strict=True, min_length=1, max_length=8000),
    AfterValidator(_no_nul),
    Field(json_schema_extra={"pattern": "^[^\\u0000]*$"}),  # the same rule, for producers
]


class WorldPayload(BaseModel):
    """Base of every world event payload. It serializes the fields its producer set, so an
    event re-encoded (by the gateway, in the world's log) says what it said on the wire."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_serializer(mode="wrap")
    def _fields_set(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        dumped: dict[str, Any] = handler(self)
        return {name: value for name, value in dumped.items() if name in self.model_fields_set}


class WorldLoaded(WorldPayload):
    """A world comes into play; with a `template`, an empty world is filled with a starter
    village (locations, factions, NPCs)."""

    name: Label | None = None
    template: Literal["village"] | None = None
    image_url: Url | None = None
    image_base_url: Url | None = None


class WorldUnloaded(WorldPayload):
    """A world leaves play: ticks for it are refused until it is loaded again."""


class LocationCreated(WorldPayload):
    location_id: Identifier
    name: Label
    kind: LocationKind
    capacity: Quantity = 50
    stock: dict[Resource, Quantity] = Field(default_factory=dict)
    image_url: Url | None = None


class NpcCreated(WorldPayload):
    """A new NPC; the locations and faction it names must exist in the world."""

    npc_id: Identifier
    name: Label
    location_id: Identifier | None = None
    home_id: Identifier | None = None
    work_id: Identifier | None = None
    faction_id: Identifier | None = None
    wealth: Quantity = 20
    hunger: Need = 200
    energy: Need = 800
    image_url: Url | None = None


class NpcMoved(WorldPayload):
    npc_id: Identifier
    location_id: Identifier


class ItemCreated(WorldPayload):
    """An item at a location or owned by an NPC (not both)."""

    item_id: Identifier
    name: Label
    value: Quantity = 0
    location_id: Identifier | None = None
    owner_id: Identifier | None = None


class FactionChanged(WorldPayload):
    """Creates the faction if needed; NPCs join or leave, treasury and reputation move."""

    faction_id: Identifier
    name: Label | None = None
    join: Annotated[list[Identifier], Field(max_length=1000)] = Field(default_factory=list)
    leave: Annotated[list[Identifier], Field(max_length=1000)] = Field(default_factory=list)
    treasury_delta: Delta = 0
    reputation_delta: Delta = 0
    attitudes: dict[Identifier, Attitude] = Field(default_factory=dict)


class MemoryRecorded(WorldPayload):
    """A memory of the world, or of one NPC; its id defaults to the event's id."""

    memory_id: Identifier | None = None
    npc_id: Identifier | None = None
    content: MemoryText
    importance: Annotated[int, Field(strict=True, ge=1, le=10)] = 5


class RelationshipChanged(WorldPayload):
    npc_id: Identifier
    other_npc_id: Identifier
    delta: Attitude


PAYLOADS: dict[str, type[WorldPayload]] = {
    "world_loaded": WorldLoaded,
    "world_unloaded": WorldUnloaded,
    "location_created": LocationCreated,
    "npc_created": NpcCreated,
    "npc_moved": NpcMoved,
    "item_created": ItemCreated,
    "faction_changed": FactionChanged,
    "memory_recorded": MemoryRecorded,
    "relationship_changed": RelationshipChanged,
}
EVENT_TYPES = tuple(sorted(PAYLOADS))
