"""Provider key pools whose limits hold across every worker: token buckets and cool-downs live in
Redis and are read and updated by one Lua script per round trip (the takes of concurrent calls
go together), so two workers can never both take a key's last token.

A key is only ever named by its id (`openrouter:3f9a1c02d4`, a short hash): logs, metrics,
responses and usage events carry the id, never the key.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis

from runtime.batched_calls import BatchedCalls
from runtime.metrics import PROVIDER_KEY_QUOTA_USED_RATIO as KEY_QUOTA_USED

MINUTE_MS = 60_000
DAY_MS = 86_400_000

# KEYS: per candidate, its cool-down key followed by one bucket key per limit.
# ARGV: the number of limits, the candidate to look at first (ties go to the first seen, so
# equal keys share the load), the number of takes, then (capacity, window_ms) per limit.
# Each take picks the candidate with the most headroom (the smallest share of a bucket left,
# across its limits) that is not cooling down and has a token in every bucket, and takes the
# tokens, as that many calls of one take in a row would.
# Returns per take {index, 0, tokens left per limit (as strings: Redis would truncate a Lua
# number)}, or {-1, ms until the first candidate could be used, then one '0' per limit}.
ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limits = tonumber(ARGV[1])
local first = tonumber(ARGV[2])
local takes = tonumber(ARGV[3])
local stride = limits + 1
local capacity, window = {}, {}
for j = 1, limits do
  capacity[j] = tonumber(ARGV[2 * j + 2])
  window[j] = tonumber(ARGV[2 * j + 3])
end
local count = #KEYS / stride
local waits, tokens = {}, {}
for i = 0, count - 1 do
  local base = i * stride
  local cool = tonumber(redis.call('GET', KEYS[base + 1]) or '0')
  waits[i] = 0
  if cool > now then waits[i] = cool - now end
  tokens[i] = {}
  for j = 1, limits do
    local bucket = redis.call('HMGET', KEYS[base + 1 + j], 'tokens', 'at')
    local have = tonumber(bucket[1]) or capacity[j]
    local at = tonumber(bucket[2]) or now
    if now > at then have = math.min(capacity[j], have + (now - at) * capacity[j] / window[j]) end
    tokens[i][j] = have
  end
end
local taken, out = {}, {}
for k = 0, takes - 1 do
  local best, best_room, soonest = -1, -1, -1
  for n = 0, count - 1 do
    local i = (n + first + k) % count
    local wait = waits[i]
    local room = 1.0
    for j = 1, limits do
      local have = tokens[i][j]
      if have < 1 then
        local need = math.ceil((1 - have) * window[j] / capacity[j])
        if need > wait then wait = need end
      end
      if have / capacity[j] < room then room = have / capacity[j] end
    end
    if wait == 0 then
      if room > best_room then best, best_room = i, room end
    elseif soonest < 0 or wait < soonest then
      soonest = wait
    end
  end
  if best < 0 then
    out[#out + 1] = -1
    out[#out + 1] = soonest
    for j = 1, limits do out[#out + 1] = '0' end
  else
    taken[best] = true
    out[#out + 1] = best
    out[#out + 1] = 0
    for j = 1, limits do
      tokens[best][j] = tokens[best][j] - 1
      out[#out + 1] = tostring(tokens[best][j])
    end
  end
end
for i, _ in pairs(taken) do
  for j = 1, limits do
    local key = KEYS[i * stride + 1 + j]
    redis.call('HSET', key, 'tokens', tostring(tokens[i][j]), 'at', now)
    redis.call('PEXPIRE', key, window[j] * 2)
  end
end
return out
"""

# KEYS[1]: the cool-down key. ARGV[1]: milliseconds. Only ever extends a cool-down.
COOL = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ms = tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if now + ms > current then
  redis.call('SET', KEYS[1], now + ms, 'PX', ms)
end
return now + ms
"""


def key_id(service: str, secret: str) -> str:
    return f"{service}:{hashlib.sha256(secret.encode()).hexdigest()[:10]}"


@dataclass(frozen=True)
class ProviderKey:
    service: str
    id: str
    secret: str = field(repr=False)

    @classmethod
    def of(cls, service: str, secret: str) -> ProviderKey:
        return cls(service, key_id(service, secret), secret)


@dataclass(frozen=True)
class Limit:
    capacity: int
    window_ms: int


@dataclass(frozen=True)
class Wait:
    """No key can be used now; the first becomes usable after `seconds`."""

    seconds: float


@dataclass(frozen=True)
class Taken:
    """A candidate's tokens taken; `used`: per limit, the share of its capacity now used."""

    name: str
    used: dict[Limit, float]


WINDOW_NAMES = {MINUTE_MS: "minute", DAY_MS: "day"}


class TokenBuckets:
    """Named candidates, each with a cool-down and the same limits, shared through Redis."""

    def __init__(
        self, client: aioredis.Redis, namespace: str, names: list[str], limits: list[Limit]
    ) -> None:
        if not names:
            raise ValueError(f"{namespace}: no candidates")
        self.client = client
        self.names = names
        self.limits = [lim for lim in limits if lim.capacity > 0]
        # One hash tag per pool keeps its keys in one Redis Cluster slot, as a script needs.
        prefix = f"router:{{{namespace}}}"
        self._keys: list[str] = []
        for name in names:
            self._keys.append(f"{prefix}:{name}:cool")
            self._keys.extend(f"{prefix}:{name}:bucket:{lim.window_ms}" for lim in self.limits)
        self._cool_keys = {name: f"{prefix}:{name}:cool" for name in names}
        self._limit_args: list[int] = []
        for lim in self.limits:
            self._limit_args.extend((lim.capacity, lim.window_ms))
        self._acquire = client.register_script(ACQUIRE)
        self._takes: BatchedCalls[None, Taken | Wait] = BatchedCalls(self._take_many)
        self._cool = client.register_script(COOL)

    async def acquire(self) -> str | Wait:
        taken = await self.take()
        return taken if isinstance(taken, Wait) else taken.name

    async def take(self) -> Taken | Wait:
        """A token of every limit from the candidate with the most headroom, and what is left.
        Takes asked for while another round trip is on its way go together in one script."""
        return await self._takes(None)

    async def _take_many(self, asks: list[None]) -> list[Taken | Wait]:
        first = random.randrange(len(self.names))
        flat = await self._acquire(
            keys=self._keys, args=[len(self.limits), first, len(asks), *self._limit_args]
        )
        width = 2 + len(self.limits)
        return [self._read_take(flat[at : at + width]) for at in range(0, len(flat), width)]

    def _read_take(self, answer: list[Any]) -> Taken | Wait:
        index, wait_ms, *left = answer
        if int(index) < 0:
            return Wait(int(wait_ms) / 1000)
        used = {
            limit: 1 - max(0.0, float(tokens)) / limit.capacity
            for limit, tokens in zip(self.limits, left, strict=True)
        }
        return Taken(self.names[int(index)], used)

    async def cool(self, name: str, seconds: float) -> None:
        await self._cool(keys=[self._cool_keys[name]], args=[max(1, int(seconds * 1000))])


class KeyPool:
    """A provider's keys: the one with the most headroom first; a key answered with 429 rests
    for its Retry-After."""

    def __init__(
        self,
        client: aioredis.Redis,
        service: str,
        secrets: tuple[str, ...],
        requests_per_minute: int,
        requests_per_day: int,
    ) -> None:
        self.service = service
        self.keys = {k.id: k for k in (ProviderKey.of(service, s) for s in secrets)}
        self._buckets = TokenBuckets(
            client,
            f"keys:{service}",
            list(self.keys),
            [Limit(requests_per_minute, MINUTE_MS), Limit(requests_per_day, DAY_MS)],
        )

    async def acquire(self) -> ProviderKey | Wait:
        taken = await self._buckets.take()
        if isinstance(taken, Wait):
            return taken
        key = self.keys[taken.name]
        for limit, used in taken.used.items():
            window = WINDOW_NAMES.get(limit.window_ms, f"{limit.window_ms}ms")
            KEY_QUOTA_USED.labels(provider=self.service, key_id=key.id, window=window).set(used)
        return key

    async def cool(self, key: ProviderKey, seconds: float) -> None:
        await self._buckets.cool(key.id, seconds)
