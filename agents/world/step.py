"""`step(state, tick)`: one tick (ten in-world minutes) of a world's life.

Pure: no I/O, no clock, no global randomness. Every roll comes from a `Dice` seeded by
(world id, tick, stream), every map is walked in sorted order and all arithmetic is on
integers, so the same state and tick give a byte-identical next state on any machine.

Each tick NPCs get hungrier and more tired and choose what to do: eat (from their bag or by
buying at the market), sleep at home, work (farms, forests, mines and harbors yield goods they
sell to the market; other places pay a wage), socialize (relationships drift, shaped by their
factions' attitudes) or idle about. On the hour the weather may turn, land regrows, market
prices follow stock and caravans trade the surplus; at midnight factions collect their tax.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agents.world.dice import Dice, TickSeeds
from agents.world.model import (
    BASE_PRICES,
    FOODS,
    NEED_MAX,
    PRODUCES,
    TICKS_PER_DAY,
    TICKS_PER_HOUR,
    Activity,
    Clock,
    DerivedEvent,
    Location,
    Npc,
    Weather,
    WorldState,
)
from schemas.world import RELATIONSHIP_LIMIT, LocationKind, Resource

HUNGER_PER_TICK = 6
HUNGRY_AT = 650
STARVING_AT = 900
MEAL_RELIEF = 450
ALMS_RELIEF = 300
SLEEP_GAIN = 30
AWAKE_COST = 4
WORK_COST = 8
EXHAUSTED_AT = 150
WAGE = 3
FRIEND_AT = 50
RIVAL_AT = -50
TAX_DIVISOR = 20
SCARCE_BELOW = 10
PLENTY_ABOVE = 30
EXPORT_ABOVE = 40
IMPORT_BATCH = 5
ALE_PRICE = 1
HOARD_LIMIT = 20
REGROW_PER_HOUR = 3

WEATHER_TRANSITIONS: dict[Weather, tuple[tuple[Weather, int], ...]] = {
    Weather.CLEAR: ((Weather.CLEAR, 700), (Weather.CLOUDY, 250), (Weather.FOG, 50)),
    Weather.CLOUDY: (
        (Weather.CLEAR, 300),
        (Weather.CLOUDY, 400),
        (Weather.RAIN, 250),
        (Weather.FOG, 50),
    ),
    Weather.RAIN: ((Weather.CLOUDY, 400), (Weather.RAIN, 450), (Weather.STORM, 150)),
    Weather.STORM: ((Weather.RAIN, 600), (Weather.STORM, 400)),
    Weather.FOG: ((Weather.CLEAR, 500), (Weather.CLOUDY, 500)),
}
WET = (Weather.RAIN, Weather.STORM)
SOCIABLE = (Activity.SOCIALIZING, Activity.IDLE, Activity.EATING)


class StepError(ValueError):
    """`step` was asked to skip or repeat a tick."""


def step(state: WorldState, tick: int) -> tuple[WorldState, list[DerivedEvent]]:
    """The world one tick later and what happened in it; `state` itself is not changed."""
    if tick != state.tick + 1:
        raise StepError(
            f"world {state.world_id} is at tick {state.tick}; step advances one tick at a time "
            f"(asked for {tick})"
        )
    # Locations and NPCs' maps are copied only when the tick changes them (`_Turn.changing`,
    # `_Turn.inventory`, `_Turn.relationships`).
    world = state.clone(copy_on_write=True)
    world.tick = tick
    world.version += 1
    turn = _Turn(world, Clock(tick))
    seeds = TickSeeds(world.world_id, tick)
    if tick % TICKS_PER_HOUR == 0:
        turn.turn_weather(seeds.dice("weather"))
        turn.regrow()
        turn.run_market()
    if tick % TICKS_PER_DAY == 0:
        turn.collect_taxes()
    for npc_id in sorted(world.npcs):
        turn.live(world.npcs[npc_id], seeds.dice(npc_id))
    return world, turn.events


@dataclass
class _Turn:
    world: WorldState
    clock: Clock
    events: list[DerivedEvent] = field(default_factory=list)
    _by_kind: dict[LocationKind, list[str]] = field(default_factory=dict)
    _copied: set[str] = field(default_factory=set)  # locations this tick owns (`changing`)
    _own_inventories: set[str] = field(default_factory=set)  # NPC ids
    _own_relationships: set[str] = field(default_factory=set)  # NPC ids
    # The clock's facts every NPC asks, computed once per tick.
    night: bool = False
    work_hours: bool = False

    def __post_init__(self) -> None:
        self.night = self.clock.is_night
        self.work_hours = self.clock.is_work_hours
        for location_id in sorted(self.world.locations):
            kind = self.world.locations[location_id].kind
            self._by_kind.setdefault(kind, []).append(location_id)

    def changing(self, location_id: str) -> Location:
        """The world's location, copied on its first change this tick: until then it is the
        object the state stepped from holds, which must not change."""
        if location_id not in self._copied:
            self._copied.add(location_id)
            self.world.locations[location_id] = self.world.locations[location_id].copy()
        return self.world.locations[location_id]

    def inventory(self, npc: Npc) -> dict[str, int]:
        """The NPC's inventory to change, copied on its first change this tick."""
        if npc.npc_id not in self._own_inventories:
            self._own_inventories.add(npc.npc_id)
            npc.inventory = dict(npc.inventory)
        return npc.inventory

    def relationships(self, npc: Npc) -> dict[str, int]:
        """The NPC's relationships to change, copied on their first change this tick."""
        if npc.npc_id not in self._own_relationships:
            self._own_relationships.add(npc.npc_id)
            npc.relationships = dict(npc.relationships)
        return npc.relationships

    def first(self, *kinds: LocationKind) -> str | None:
        for kind in kinds:
            if self._by_kind.get(kind):
                return self._by_kind[kind][0]
        return None

    # -- the hour and the day -------------------------------------------------------------

    def turn_weather(self, dice: Dice) -> None:
        before = self.world.weather
        after = dice.weighted(WEATHER_TRANSITIONS[before])
        if after is not before:
            self.world.weather = after
            self.events.append(
                DerivedEvent("weather_changed", {"from": before.value, "to": after.value})
            )

    def regrow(self) -> None:
        amount = 1 if self.world.weather is Weather.STORM else REGROW_PER_HOUR
        for location_id in sorted(self.world.locations):
            resource = PRODUCES.get(self.world.locations[location_id].kind)
            if resource is not None:
                place = self.changing(location_id)
                stock = place.stock.get(resource.value, 0)
                place.stock[resource.value] = min(place.capacity, stock + amount)

    def run_market(self) -> None:
        market = self.world.market
        for resource in sorted(market.prices):
            price = market.prices[resource]
            stock = market.stock.get(resource, 0)
            if stock > EXPORT_ABOVE:
                sold = stock - EXPORT_ABOVE
                market.stock[resource] = EXPORT_ABOVE
                market.treasury += sold * price
                self.events.append(
                    DerivedEvent(
                        "caravan_traded",
                        {"resource": resource, "quantity": sold, "price": price, "side": "export"},
                    )
                )
            elif resource in FOODS and stock < IMPORT_BATCH <= market.treasury // price:
                market.stock[resource] = stock + IMPORT_BATCH
                market.treasury -= IMPORT_BATCH * price
                self.events.append(
                    DerivedEvent(
                        "caravan_traded",
                        {
                            "resource": resource,
                            "quantity": IMPORT_BATCH,
                            "price": price,
                            "side": "import",
                        },
                    )
                )
            stock = market.stock.get(resource, 0)
            step_size = max(1, price // 10)
            base = BASE_PRICES.get(resource, price)
            if stock < SCARCE_BELOW:
                new_price = min(base * 4, price + step_size)
            elif stock > PLENTY_ABOVE:
                new_price = max(1, base // 2, price - step_size)
            else:
                new_price = price
            if new_price != price:
                market.prices[resource] = new_price
                self.events.append(
                    DerivedEvent(
                        "price_changed", {"resource": resource, "from": price, "to": new_price}
                    )
                )

    def collect_taxes(self) -> None:
        for faction_id in sorted(self.world.factions):
            faction = self.world.factions[faction_id]
            collected = 0
            members = 0
            for npc_id in sorted(self.world.npcs):
                npc = self.world.npcs[npc_id]
                if npc.faction_id == faction_id:
                    members += 1
                    tax = npc.wealth // TAX_DIVISOR
                    npc.wealth -= tax
                    collected += tax
            faction.treasury += collected
            if faction.reputation:
                faction.reputation -= 1 if faction.reputation > 0 else -1
            if members:
                self.events.append(
                    DerivedEvent(
                        "faction_taxed",
                        {"faction_id": faction_id, "members": members, "collected": collected},
                    )
                )

    # -- one NPC's ten minutes ------------------------------------------------------------

    def live(self, npc: Npc, dice: Dice) -> None:
        npc.hunger = min(NEED_MAX, npc.hunger + HUNGER_PER_TICK)
        if npc.activity is Activity.SLEEPING:
            npc.energy = min(NEED_MAX, npc.energy + SLEEP_GAIN)
            rested = npc.energy >= NEED_MAX or not self.night
            if not rested and npc.hunger < STARVING_AT:
                return
        else:
            cost = WORK_COST if npc.activity is Activity.WORKING else AWAKE_COST
            npc.energy = max(0, npc.energy - cost)
        wet = self.world.weather in WET
        if npc.hunger >= HUNGRY_AT:
            self.eat(npc)
        elif npc.energy <= EXHAUSTED_AT or (self.night and npc.energy < 700):
            self.sleep(npc)
        elif (
            self.work_hours
            and npc.work_id in self.world.locations
            and (npc.wealth < 100 or dice.chance(650))
        ):
            self.work(npc)
        elif dice.chance(150 if wet else 350):
            self.socialize(npc, dice)
        else:
            self.idle(npc, dice)

    def move(self, npc: Npc, location_id: str | None, reason: str) -> None:
        if location_id is None or location_id == npc.location_id:
            return
        self.events.append(
            DerivedEvent(
                "npc_moved",
                {
                    "npc_id": npc.npc_id,
                    "from": npc.location_id,
                    "to": location_id,
                    "reason": reason,
                },
            )
        )
        npc.location_id = location_id

    def eat(self, npc: Npc) -> None:
        for food in FOODS:
            if npc.inventory.get(food.value, 0) > 0:
                _take(self.inventory(npc), food.value, 1)
                npc.hunger = max(0, npc.hunger - MEAL_RELIEF)
                npc.activity = Activity.EATING
                return
        market = self.world.market
        market_place = self.first(LocationKind.MARKET)
        affordable = sorted(
            (market.prices[food.value], food.value)
            for food in FOODS
            if market.stock.get(food.value, 0) > 0 and market.prices[food.value] <= npc.wealth
        )
        if market_place is not None and affordable:
            price, food_name = affordable[0]
            self.move(npc, market_place, "buying food")
            npc.wealth -= price
            market.treasury += price
            _take(market.stock, food_name, 1)
            npc.hunger = max(0, npc.hunger - MEAL_RELIEF)
            npc.activity = Activity.EATING
            self.events.append(
                DerivedEvent(
                    "trade",
                    {
                        "npc_id": npc.npc_id,
                        "resource": food_name,
                        "quantity": 1,
                        "price": price,
                        "side": "buy",
                    },
                )
            )
            return
        npc.activity = Activity.HUNGRY
        temple = self.first(LocationKind.TEMPLE)
        self.move(npc, temple, "seeking alms")
        if temple is not None and npc.hunger >= STARVING_AT:
            npc.hunger -= ALMS_RELIEF

    def sleep(self, npc: Npc) -> None:
        if npc.home_id in self.world.locations:
            self.move(npc, npc.home_id, "going home")
        npc.activity = Activity.SLEEPING

    def work(self, npc: Npc) -> None:
        assert npc.work_id is not None
        place = self.world.locations[npc.work_id]
        self.move(npc, place.location_id, "going to work")
        npc.activity = Activity.WORKING
        resource = PRODUCES.get(place.kind)
        if resource is None:
            self.pay_wage(npc)
            return
        name = resource.value
        room = max(0, HOARD_LIMIT - npc.inventory.get(name, 0))
        yield_ = min(1 if self.world.weather in WET else 2, place.stock.get(name, 0), room)
        if yield_:
            _take(self.changing(place.location_id).stock, name, yield_)
            self.inventory(npc)[name] = npc.inventory.get(name, 0) + yield_
        self.sell_surplus(npc, resource)

    def pay_wage(self, npc: Npc) -> None:
        faction = self.world.factions.get(npc.faction_id or "")
        if faction is not None and faction.treasury >= WAGE:
            faction.treasury -= WAGE
            npc.wealth += WAGE
        elif self.world.market.treasury >= WAGE:
            self.world.market.treasury -= WAGE
            npc.wealth += WAGE

    def sell_surplus(self, npc: Npc, resource: Resource) -> None:
        market = self.world.market
        name = resource.value
        keep = 1 if resource in FOODS else 0
        held = npc.inventory.get(name, 0)
        price = market.prices.get(name, 0)
        if held < 4 or price <= 0 or self.first(LocationKind.MARKET) is None:
            return
        quantity = min(held - keep, market.treasury // price)
        if quantity <= 0:
            return
        _take(self.inventory(npc), name, quantity)
        market.stock[name] = market.stock.get(name, 0) + quantity
        market.treasury -= quantity * price
        npc.wealth += quantity * price
        self.events.append(
            DerivedEvent(
                "trade",
                {
                    "npc_id": npc.npc_id,
                    "resource": name,
                    "quantity": quantity,
                    "price": price,
                    "side": "sell",
                },
            )
        )

    def socialize(self, npc: Npc, dice: Dice) -> None:
        venue = self.first(LocationKind.TAVERN, LocationKind.SQUARE) or npc.location_id
        self.move(npc, venue, "meeting people")
        npc.activity = Activity.SOCIALIZING
        venue_place = self.world.locations.get(npc.location_id or "")
        if venue_place is not None and venue_place.kind is LocationKind.TAVERN and npc.wealth:
            npc.wealth -= ALE_PRICE
            self.world.market.treasury += ALE_PRICE
        company = [
            other_id
            for other_id in sorted(self.world.npcs)
            if other_id != npc.npc_id
            and self.world.npcs[other_id].location_id == npc.location_id
            and self.world.npcs[other_id].activity in SOCIABLE
        ]
        if company:
            other = self.world.npcs[dice.pick(company)]
            delta = dice.between(-4, 5) + self.affinity(npc, other)
            self.bond(npc, other, delta)
            self.bond(other, npc, delta)

    def affinity(self, npc: Npc, other: Npc) -> int:
        if npc.faction_id is None or other.faction_id is None:
            return 0
        if npc.faction_id == other.faction_id:
            return 1
        faction = self.world.factions.get(npc.faction_id)
        return faction.attitudes.get(other.faction_id, 0) // 25 if faction else 0

    def bond(self, npc: Npc, other: Npc, delta: int) -> None:
        before = npc.relationships.get(other.npc_id, 0)
        after = max(-RELATIONSHIP_LIMIT, min(RELATIONSHIP_LIMIT, before + delta))
        self.relationships(npc)[other.npc_id] = after
        if _bond_name(before) != _bond_name(after):
            self.events.append(
                DerivedEvent(
                    "relationship_changed",
                    {
                        "npc_id": npc.npc_id,
                        "other_npc_id": other.npc_id,
                        "from": before,
                        "to": after,
                        "bond": _bond_name(after),
                    },
                )
            )

    def idle(self, npc: Npc, dice: Dice) -> None:
        npc.activity = Activity.IDLE
        if self.world.locations and dice.chance(150):
            self.move(npc, dice.pick(sorted(self.world.locations)), "wandering")


def _bond_name(score: int) -> str:
    if score >= FRIEND_AT:
        return "friend"
    if score <= RIVAL_AT:
        return "rival"
    return "acquaintance"


def _take(stock: dict[str, int], name: str, amount: int) -> None:
    """Remove `amount`; an emptied entry is dropped so equal holdings serialize equally."""
    left = stock.get(name, 0) - amount
    if left < 0:
        raise AssertionError(f"took {amount} {name} from a stock of {stock.get(name, 0)}")
    if left:
        stock[name] = left
    else:
        del stock[name]
