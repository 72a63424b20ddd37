"""A per-client token bucket in Redis, shared by every gateway process.

One Lua script reads, refills, spends and writes the bucket atomically, on Redis's own clock,
so N gateway processes enforce one limit per client with no lock and no clock skew. A bucket
holds up to `burst` tokens and refills at `rate` tokens per second; a request costs one token
per event it carries (at least one).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

KEY_PREFIX = "scribe:gateway:bucket:"

# KEYS[1]: the bucket; ARGV: rate (tokens/s), burst, cost. Returns {allowed, wait_ms, tokens}.
# Times are milliseconds from Redis TIME; state is a hash of tokens and the last refill time.
TAKE_SCRIPT = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + tonumber(clock[2]) / 1000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1])
local at = tonumber(state[2])
if tokens == nil or at == nil then
  tokens = burst
  at = now
end
tokens = math.min(burst, tokens + math.max(0, now - at) * rate / 1000)
local allowed = 0
local wait_ms = 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
else
  wait_ms = math.ceil((cost - tokens) * 1000 / rate)
end
local left = string.format('%.6f', tokens)
redis.call('HSET', KEYS[1], 'tokens', left, 'at', string.format('%.3f', now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 1000)
return {allowed, wait_ms, left}
"""


@dataclass(frozen=True)
class Decision:
    allowed: bool
    wait_ms: int  # when refused: how long until the bucket holds enough tokens
    tokens_left: float

    @property
    def retry_after_s(self) -> int:
        """The `Retry-After` header: whole seconds, at least 1."""
        return max(1, math.ceil(self.wait_ms / 1000))


class TokenBucket:
    def __init__(self, redis: aioredis.Redis, rate: float, burst: int) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"a token bucket needs rate > 0 and burst >= 1 (got {rate}, {burst})")
        self.rate = rate
        self.burst = burst
        self._take: Any = redis.register_script(TAKE_SCRIPT)

    async def take(self, client: str, cost: int) -> Decision:
        if cost > self.burst:
            raise ValueError(f"a cost of {cost} can never fit a bucket of {self.burst}")
        allowed, wait_ms, tokens = await self._take(
            keys=[KEY_PREFIX + client], args=[self.rate, self.burst, max(1, cost)]
        )
        return Decision(bool(allowed), int(wait_ms), float(tokens))
