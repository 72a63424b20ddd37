"""A realistic mixed workload, generated with no I/O: the same seed (and clock) gives the same
events in the same order, so a benchmark can be rerun and a test can check what it got.

- Users and worlds follow a Zipf-like law: a few are very active, most are not.
- AI requests mix priorities and kinds (text, image); a fifth of users are premium.
- Usage events price real catalog models exactly (Decimal).
- World events follow the world contract: a world's first event is `world_loaded` with the
  village template, the others name the village's NPCs and places. Ticks go round-robin over
  the worlds loaded at least `tick_delay_s` ago, each world's ticks numbered 1, 2, 3, ...
- Cache invalidations arrive in bursts (an edit to a world invalidates many keys at once).
- Optionally, a share of deliberately malformed messages, for the dead-letter path.
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from schemas.events import (
    AIRequest,
    CacheInvalidation,
    Event,
    Priority,
    RequestKind,
    UsageEvent,
    UserTier,
    WorldEvent,
    WorldTick,
)
from schemas.model_catalog import ModelPrice, load_catalog
from schemas.world import LocationKind
from topics.catalog import INPUT_TOPICS

CENT_FRACTION = Decimal(1).scaleb(-12)  # money carries at most 12 decimal places
PRIORITY_WEIGHTS = {
    Priority.URGENT: 5,
    Priority.HIGH: 15,
    Priority.NORMAL: 50,
    Priority.LOW: 20,
    Priority.BACKGROUND: 10,
}
IMAGE_SHARE = 0.15
PREMIUM_PERCENT = 20
PROMPTS = (
    "Describe the tavern at dusk.",
    "What does the innkeeper say about the missing caravan?",
    "Paint the harbour as the storm rolls in.",
    "Continue the duel on the bridge.",
    "Summarize what the party learned in the crypt.",
    "Draw a map of the northern marches.",
)
# World events after a world's first (`world_loaded` with the village template): they name
# the NPCs, places and factions that template creates, so the world flow applies every one.
WORLD_EVENT_TYPES = (
    "npc_moved",
    "memory_recorded",
    "relationship_changed",
    "location_created",
    "item_created",
    "faction_changed",
)
VILLAGE_NPCS = 8
VILLAGE_PLACES = ("square", "tavern", "market", "temple", "farm", "forest", "mine", "harbor")
VILLAGE_FACTIONS = ("guild", "faith")
MALFORMED = (
    b'{"truncated": ',
    b"[1, 2, 3]",
    b'{"schema_version": 1, "unexpected": true}',
    b"\xff\xfe not utf-8",
)


@dataclass(frozen=True)
class Mix:
    """Shares of each family among the valid events (they need not sum to 1), and the share
    of malformed messages among all messages."""

    ai_requests: float = 0.30
    usage_events: float = 0.40
    world_events: float = 0.15
    world_ticks: float = 0.10
    cache_invalidations: float = 0.05
    malformed: float = 0.0


@dataclass(frozen=True)
class WorkloadConfig:
    seed: int = 7
    run_id: str = "run"  # in every event id, so two runs never share ids
    prefix: str = "load-"  # of user, world and malformed-message keys
    users: int = 10_000
    worlds: int = 500
    zipf_exponent: float = 1.1
    burst_sizes: tuple[int, int] = (10, 50)  # invalidations per burst, inclusive
    mix: Mix = field(default_factory=Mix)
    # A world gets ticks only this long after its `world_loaded`: a tick for a world the
    # worker has not created yet is refused (`unknown_world`), and the two topics are read
    # independently (a worker that lags reads them apart).
    tick_delay_s: float = 5.0


@dataclass(frozen=True)
class Malformed:
    """A message that no schema accepts: it should land in `topic`'s dead-letter topic."""

    topic: str
    key: bytes
    value: bytes


Message = Event | Malformed


def _zipf_cumulative(count: int, exponent: float) -> list[float]:
    weights = (1 / rank**exponent for rank in range(1, count + 1))
    return list(itertools.accumulate(weights))


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Workload:
    """An endless, deterministic stream of messages: `next()` or iterate."""

    def __init__(
        self, config: WorkloadConfig | None = None, clock: Callable[[], datetime] = _utc_now
    ) -> None:
        self.config = config or WorkloadConfig()
        self.clock = clock
        self._rng = random.Random(self.config.seed)
        self._users = _zipf_cumulative(self.config.users, self.config.zipf_exponent)
        self._worlds = _zipf_cumulative(self.config.worlds, self.config.zipf_exponent)
        self._count = 0
        self._loaded: set[str] = set()
        self._waiting_for_ticks: deque[tuple[datetime, str]] = deque()  # (loaded at, world)
        self._tickable: list[str] = []
        self._ticks: dict[str, int] = {}  # the last tick sent per world
        self._ticks_sent = 0
        self._priorities = list(PRIORITY_WEIGHTS)
        self._priority_cumulative = list(itertools.accumulate(PRIORITY_WEIGHTS.values()))
        self._burst: list[CacheInvalidation] = []
        self._text_models = [m for m in load_catalog().models if m.kind == "text"]
        self._image_models = [m for m in load_catalog().models if m.kind == "image"]
        mix = self.config.mix
        low, high = self.config.burst_sizes
        mean_burst = (low + high) / 2
        steady = mix.ai_requests + mix.usage_events + mix.world_events + mix.world_ticks
        share = mix.cache_invalidations / (steady + mix.cache_invalidations)
        # A burst of B invalidations starts with probability p per draw, so that invalidations
        # make up `share` of the events: p * B / (p * B + 1 - p) = share.
        burst_start = share / (mean_burst * (1 - share) + share)
        rest = 1 - burst_start
        self._makers: list[Callable[[], Event]] = [
            self._ai_request,
            self._usage_event,
            self._world_event,
            self._world_tick,
            self._start_burst,
        ]
        self._family_cumulative = list(
            itertools.accumulate(
                [
                    rest * mix.ai_requests / steady,
                    rest * mix.usage_events / steady,
                    rest * mix.world_events / steady,
                    rest * mix.world_ticks / steady,
                    burst_start,
                ]
            )
        )

    def __iter__(self) -> Iterator[Message]:
        while True:
            yield self.next()

    def next(self) -> Message:
        self._count += 1
        if self._burst:
            return self._burst.pop()
        if self.config.mix.malformed and self._rng.random() < self.config.mix.malformed:
            return self._malformed()
        roll = self._rng.random() * self._family_cumulative[-1]
        return self._makers[bisect.bisect_right(self._family_cumulative, roll)]()

    def _id(self, kind: str) -> str:
        return f"{kind}-{self.config.run_id}-{self._count}"

    def _user(self) -> tuple[str, UserTier]:
        rank = bisect.bisect_left(self._users, self._rng.random() * self._users[-1]) + 1
        # A fixed fifth of users are premium, spread over busy and quiet ones alike.
        tier = UserTier.PREMIUM if (rank * 2654435761) % 100 < PREMIUM_PERCENT else UserTier.FREE
        return f"{self.config.prefix}user-{rank}", tier

    def _world(self) -> str:
        rank = bisect.bisect_left(self._worlds, self._rng.random() * self._worlds[-1]) + 1
        return f"{self.config.prefix}world-{rank}"

    def _kind(self) -> RequestKind:
        return RequestKind.IMAGE if self._rng.random() < IMAGE_SHARE else RequestKind.TEXT

    def _priority(self) -> Priority:
        return self._rng.choices(self._priorities, cum_weights=self._priority_cumulative)[0]

    def _ai_request(self) -> AIRequest:
        user, tier = self._user()
        kind = self._kind()
        priority = self._priority()
        return AIRequest(
            request_id=self._id("req"),
            user_id=user,
            kind=kind,
            priority=priority,
            prompt=self._rng.choice(PROMPTS),
            user_tier=tier,
            created_at=self.clock(),
            world_id=self._world(),
        )

    def _usage_event(self) -> UsageEvent:
        user, _ = self._user()
        kind = self._kind()
        models = self._image_models if kind is RequestKind.IMAGE else self._text_models
        model: ModelPrice = self._rng.choice(models)
        input_tokens = int(self._rng.lognormvariate(5.5, 0.8))
        output_tokens = 0 if kind is RequestKind.IMAGE else int(self._rng.lognormvariate(6, 0.9))
        images = 1 if kind is RequestKind.IMAGE else 0
        cost = model.cost(input_tokens, output_tokens, images).quantize(CENT_FRACTION)
        return UsageEvent(
            event_id=self._id("use"),
            request_id=self._id("req"),
            user_id=user,
            service=model.service,
            model=model.model,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            images=images,
            free_tier=model.free,
            occurred_at=self.clock(),
            cost_usd=cost,
            world_id=self._world(),
            latency_ms=int(self._rng.lognormvariate(6.5, 0.6)),
            priority=self._priority(),
        )

    def _world_event(self) -> WorldEvent:
        world = self._world()
        if world not in self._loaded:
            return self._load(world)
        kind = self._rng.choice(WORLD_EVENT_TYPES)
        npc, other = (f"npc-{n}" for n in self._rng.sample(range(1, VILLAGE_NPCS + 1), 2))
        payload: dict[str, Any]
        if kind == "npc_moved":
            payload = {"npc_id": npc, "location_id": self._rng.choice(VILLAGE_PLACES)}
        elif kind == "memory_recorded":
            payload = {"npc_id": npc, "content": f"{npc} spoke with {other}."}
        elif kind == "relationship_changed":
            payload = {"npc_id": npc, "other_npc_id": other, "delta": self._rng.randint(-10, 10)}
        elif kind == "location_created":
            place = self._rng.choice(list(LocationKind))
            payload = {
                "location_id": self._id("loc"),
                "name": f"New {place.value}",
                "kind": place.value,
            }
        elif kind == "item_created":
            payload = {
                "item_id": self._id("item"),
                "name": "Lantern",
                "value": self._rng.randint(1, 50),
                "location_id": self._rng.choice(VILLAGE_PLACES),
            }
        else:
            payload = {"faction_id": self._rng.choice(VILLAGE_FACTIONS), "join": [npc]}
        return WorldEvent.model_validate(
            {
                "event_id": self._id("wev"),
                "world_id": world,
                "type": kind,
                "payload": payload,
                "occurred_at": self.clock(),
            }
        )

    def _load(self, world: str) -> WorldEvent:
        """A world's first event: load it with the village its other events name."""
        now = self.clock()
        self._loaded.add(world)
        self._waiting_for_ticks.append((now, world))
        return WorldEvent.model_validate(
            {
                "event_id": self._id("wev"),
                "world_id": world,
                "type": "world_loaded",
                "payload": {"template": "village"},
                "occurred_at": now,
            }
        )

    def _world_tick(self) -> WorldTick | WorldEvent:
        """The next tick, round-robin over the worlds loaded `tick_delay_s` ago or earlier;
        while there are none, a world event instead (which loads a world)."""
        now = self.clock()
        ready = now - timedelta(seconds=self.config.tick_delay_s)
        while self._waiting_for_ticks and self._waiting_for_ticks[0][0] <= ready:
            self._tickable.append(self._waiting_for_ticks.popleft()[1])
        if not self._tickable:
            return self._world_event()
        world = self._tickable[self._ticks_sent % len(self._tickable)]
        self._ticks_sent += 1
        self._ticks[world] = self._ticks.get(world, 0) + 1
        return WorldTick(world_id=world, tick=self._ticks[world], occurred_at=now)

    def _start_burst(self) -> CacheInvalidation:
        """One world changed: a run of invalidations for its keys, tags and CDN URLs."""
        world = self._world()
        size = self._rng.randint(*self.config.burst_sizes)
        now = self.clock()
        burst = []
        for offset in range(size):
            npc = self._rng.randint(1, 200)
            burst.append(
                CacheInvalidation(
                    id=f"inv-{self.config.run_id}-{self._count + offset}",
                    keys=[f"world:{world}:npc:{npc}"],
                    tags=[f"world:{world}"],
                    urls=[f"https://cdn.scribe.invalid/worlds/{world}/npc-{npc}.png"],
                    reason="world edited",
                    occurred_at=now,
                )
            )
        burst.reverse()  # popped from the end: in id order
        first = burst.pop()
        self._burst = burst
        return first

    def _malformed(self) -> Malformed:
        spec = self._rng.choice(INPUT_TOPICS)
        key = f"{self.config.prefix}bad-{self.config.run_id}".encode()
        return Malformed(spec.name, key, self._rng.choice(MALFORMED))
