"""Starter worlds: `world_loaded` with a template fills an empty world, deterministically from
its id, so a benchmark or a demo gets a living village from one event."""

from __future__ import annotations

from agents.world.dice import Dice
from agents.world.model import PRODUCES, Faction, Location, Npc, WorldState
from schemas.world import LocationKind

TEMPLATES = ("village",)

_TAVERNS = ("The Drowsy Griffin", "The Salted Eel", "The Crooked Lantern", "The Last Ember")
_NAMES = (
    "Mira",
    "Tobin",
    "Alda",
    "Corwin",
    "Hesper",
    "Ivo",
    "Brisa",
    "Dagny",
    "Fenn",
    "Oriel",
    "Rook",
    "Sabine",
    "Ulric",
    "Wren",
)
_PLACES: tuple[tuple[str, str, LocationKind], ...] = (
    ("square", "Old Square", LocationKind.SQUARE),
    ("tavern", "", LocationKind.TAVERN),
    ("market", "Market Hall", LocationKind.MARKET),
    ("temple", "Temple of the Dawn", LocationKind.TEMPLE),
    ("farm", "Barley Fields", LocationKind.FARM),
    ("forest", "Whispering Wood", LocationKind.FOREST),
    ("mine", "Copper Hollow", LocationKind.MINE),
    ("harbor", "Gull Quay", LocationKind.HARBOR),
    ("home-1", "Cottage Row", LocationKind.HOME),
    ("home-2", "Mill House", LocationKind.HOME),
    ("home-3", "Harbor Lofts", LocationKind.HOME),
)
_JOBS = ("farm", "forest", "mine", "harbor", "tavern", "market", "temple", "farm")
_GUILD_JOBS = ("market", "tavern", "harbor")
_FAITH_JOBS = ("temple", "farm")


def generate(world: WorldState, template: str, image_base_url: str | None = None) -> int:
    """Fill `world` (in place) from `template`; returns the number of NPCs created."""
    if template not in TEMPLATES:
        raise ValueError(f"unknown world template {template!r}; known: {', '.join(TEMPLATES)}")
    dice = Dice(world.world_id, 0, "genesis")
    for location_id, name, kind in _PLACES:
        resource = PRODUCES.get(kind)
        world.locations[location_id] = Location(
            location_id=location_id,
            name=name or dice.pick(_TAVERNS),
            kind=kind,
            capacity=60,
            stock={resource.value: dice.between(20, 40)} if resource else {},
            image_url=_image(image_base_url, "locations", location_id),
        )
    world.factions["guild"] = Faction("guild", "Merchants' Guild", treasury=200, attitudes={})
    world.factions["faith"] = Faction("faith", "Order of the Dawn", treasury=120, attitudes={})
    world.factions["guild"].attitudes["faith"] = -20
    world.factions["faith"].attitudes["guild"] = 10
    names = list(_NAMES)
    for number, job in enumerate(_JOBS, start=1):
        npc_id = f"npc-{number}"
        home = f"home-{(number - 1) % 3 + 1}"
        faction = "guild" if job in _GUILD_JOBS else "faith" if job in _FAITH_JOBS else None
        world.npcs[npc_id] = Npc(
            npc_id=npc_id,
            name=names.pop(dice.below(len(names))),
            location_id=home,
            home_id=home,
            work_id=job,
            faction_id=faction,
            hunger=dice.between(100, 400),
            energy=dice.between(600, 900),
            wealth=dice.between(10, 60),
            image_url=_image(image_base_url, "npcs", npc_id),
        )
    if image_base_url:
        world.image_url = f"{image_base_url.rstrip('/')}/world.png"
    return len(_JOBS)


def _image(base: str | None, kind: str, entity_id: str) -> str | None:
    return f"{base.rstrip('/')}/{kind}/{entity_id}.png" if base else None
