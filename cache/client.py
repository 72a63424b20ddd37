"""`CacheClient`: get-with-loader through the in-process L1, then Redis, then the loader.

Freshness rules (the invalidation pipeline removes Redis entries, then broadcasts to L1):

- **Leases** (Facebook's "Scaling Memcache", section 3.2.1): on a Redis miss the client takes a
  lease token in the key's hash before it calls the loader, and writes the loaded value back
  only if its token is still there. An invalidation removes the whole key, token included, so
  a slow loader that read the database before a write can never store its old value after
  the write's invalidation. Tags are registered after the lease and before the load, so a tag
  invalidation either cancels the lease or runs before the load reads the database.
- **L1** is used only while the broadcast subscription is live; a fill started before a
  matching broadcast (or a reconnect) is not stored, and new callers do not join it.
- **Single flight**: one load per key at a time in a process; other callers await it. Across
  processes the lease plays that role: a process that finds another's lease waits briefly for
  the value, then loads without writing back.

Each client counts in its `stats` and exports the same counts under its `name` to the cache
families of `runtime.metrics` (reads by answering layer, loads in flight, lease waits, their
timeouts and refused write-backs).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from types import TracebackType
from typing import Any

import orjson
import redis.asyncio as aioredis
import redis.exceptions
from prometheus_client import Counter, Gauge
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from cache.l1 import L1Cache
from cache.layout import (
    L1_CHANNEL,
    LEASE_FIELD,
    VALUE_FIELD,
    Broadcast,
    BroadcastError,
    tag_set_key,
)
from cache.patterns import compile_glob
from runtime.metrics import (
    CACHE_IN_FLIGHT_LOADS,
    CACHE_LEASE_REFUSALS,
    CACHE_LEASE_WAIT_TIMEOUTS,
    CACHE_LEASE_WAITS,
    CACHE_READS,
)

log = logging.getLogger(__name__)

Loader = Callable[[], Awaitable[Any]]
REDIS_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)
# A client's name is a metric label: a constant chosen in code, never built from data.
CACHE_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")
# The layer that answered a read (the `layer` label of scribe_cache_reads_total).
L1_LAYER, REDIS_LAYER, LOADER_LAYER = "l1", "redis", "loader"

HIT, BUSY, LEASED = 1, 2, 3
# KEYS[1] the key; ARGV[1] our lease token, ARGV[2] the lease lifetime in ms.
LOOKUP_OR_LEASE = f"""
local value = redis.call('HGET', KEYS[1], '{VALUE_FIELD}')
if value then return {{{HIT}, value}} end
if redis.call('HEXISTS', KEYS[1], '{LEASE_FIELD}') == 1 then return {{{BUSY}, ''}} end
redis.call('HSET', KEYS[1], '{LEASE_FIELD}', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return {{{LEASED}, ''}}
"""
# KEYS[1] the key; ARGV[1] our lease token, ARGV[2] the value, ARGV[3] its TTL in ms.
FILL_IF_LEASED = f"""
if redis.call('HGET', KEYS[1], '{LEASE_FIELD}') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], '{VALUE_FIELD}', ARGV[2])
redis.call('HDEL', KEYS[1], '{LEASE_FIELD}')
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""
# Give a lease back without a value (a primed key the loader had nothing for).
RELEASE_LEASE = f"""
if redis.call('HGET', KEYS[1], '{LEASE_FIELD}') == ARGV[1]
   and redis.call('HEXISTS', KEYS[1], '{VALUE_FIELD}') == 0 then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


@dataclass
class CacheStats:
    """Counts of this one client. Reads are counted once each, by the layer that answered:
    `l1_hits`, `redis_hits`, or `misses` (the read waited for a loader call, its own or one it
    joined); a read whose caller was cancelled before its answer is not counted."""

    l1_hits: int = 0
    redis_hits: int = 0
    misses: int = 0
    loads: int = 0
    fills: int = 0
    fills_refused: int = 0
    joined_flights: int = 0
    lease_waits: int = 0
    lease_wait_timeouts: int = 0
    redis_errors: int = 0
    broadcasts: int = 0
    l1_dropped: int = 0
    subscriptions: int = 0
    disconnects: int = 0

    @property
    def reads(self) -> int:
        return self.l1_hits + self.redis_hits + self.misses

    @property
    def hit_ratio(self) -> float | None:
        """Reads answered by L1 or Redis over all reads; None before the first read."""
        return (self.l1_hits + self.redis_hits) / self.reads if self.reads else None


class _ClientSeries:
    """One client's series of the runtime.metrics cache families, made on first use so that a
    process exports only what its caches did."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._reads: dict[str, Counter] = {}

    def read(self, layer: str) -> None:
        child = self._reads.get(layer)
        if child is None:
            child = self._reads[layer] = CACHE_READS.labels(cache=self.name, layer=layer)
        child.inc()

    @cached_property
    def in_flight_loads(self) -> Gauge:
        return CACHE_IN_FLIGHT_LOADS.labels(cache=self.name)

    @cached_property
    def lease_waits(self) -> Counter:
        return CACHE_LEASE_WAITS.labels(cache=self.name)

    @cached_property
    def lease_wait_timeouts(self) -> Counter:
        return CACHE_LEASE_WAIT_TIMEOUTS.labels(cache=self.name)

    @cached_property
    def lease_refusals(self) -> Counter:
        return CACHE_LEASE_REFUSALS.labels(cache=self.name)


@dataclass(frozen=True)
class PrimeResult:
    filled: int
    refused: int
    already_cached: int
    busy: int


@dataclass
class _Flight:
    tags: tuple[str, ...]
    task: asyncio.Task[Any] | None = None
    # The layer that answered: every caller of this flight counts its read under it.
    layer: str | None = None
    # An invalidation for this key arrived while it was loading: its result may predate it.
    stale: bool = False


@dataclass
class _Waiter:
    event: asyncio.Event = field(default_factory=asyncio.Event)
    count: int = 0


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


class CacheClient:
    def __init__(
        self,
        redis_url: str,
        *,
        name: str = "default",
        default_ttl: float = 300.0,
        max_ttl: float = 86_400.0,
        lease_ttl: float = 10.0,
        lease_wait: float = 0.2,
        l1: bool = True,
        l1_ttl: float = 30.0,
        l1_max_entries: int = 10_000,
        dumps: Callable[[Any], bytes] = orjson.dumps,
        loads: Callable[[bytes], Any] = orjson.loads,
        remembered_ids: int = 100_000,
    ) -> None:
        if not 0 < default_ttl <= max_ttl:
            raise ValueError("default_ttl must be positive and at most max_ttl")
        if not CACHE_NAME.fullmatch(name):
            raise ValueError(
                f"cache name {name!r}: 1-32 of a-z, 0-9, '_', '-', starting with a letter; "
                "a fixed name per cache (it labels the cache metrics), never a key or an id"
            )
        self.name = name
        self.default_ttl = default_ttl
        self.max_ttl = max_ttl
        self.lease_ttl = lease_ttl
        self.lease_wait = lease_wait
        self.l1_ttl = l1_ttl
        self.stats = CacheStats()
        self._series = _ClientSeries(name)
        self._dumps = dumps
        self._loads = loads
        self._redis = aioredis.from_url(redis_url, decode_responses=False)
        # The listener must notice a lost connection instead of reconnecting silently:
        # broadcasts published while it was away are lost, so L1 must be dropped.
        self._listener_redis = (
            aioredis.from_url(
                redis_url,
                decode_responses=False,
                retry=Retry(NoBackoff(), 0),
                health_check_interval=5,
                socket_keepalive=True,
            )
            if l1
            else None
        )
        self._lookup = self._redis.register_script(LOOKUP_OR_LEASE)
        self._fill = self._redis.register_script(FILL_IF_LEASED)
        self._release = self._redis.register_script(RELEASE_LEASE)
        self._l1 = L1Cache(l1_max_entries) if l1 else None
        self._l1_live = False
        self._live = asyncio.Event()
        self._connection_epoch = 0
        self._flights: dict[str, _Flight] = {}
        self._listener: asyncio.Task[None] | None = None
        self._applied: OrderedDict[str, None] = OrderedDict()
        self._remembered_ids = remembered_ids
        self._waiters: dict[str, _Waiter] = {}

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self, ready_timeout: float = 5.0) -> bool:
        """Start listening to the L1 broadcast; True once subscribed. Until then (or while
        the subscription is down) the client works without L1."""
        if self._listener_redis is None:
            return False
        if self._listener is None:
            self._listener = asyncio.create_task(self._listen(), name="cache-l1-listener")
        try:
            await asyncio.wait_for(self._live.wait(), ready_timeout)
        except TimeoutError:
            log.warning("cache: L1 broadcast not subscribed after %.1f s; L1 is off", ready_timeout)
            return False
        return True

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
        await self._redis.aclose()
        if self._listener_redis is not None:
            await self._listener_redis.aclose()

    async def __aenter__(self) -> CacheClient:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def l1_live(self) -> bool:
        return self._l1 is not None and self._l1_live

    # -- reads ---------------------------------------------------------------------------

    async def get(
        self, key: str, loader: Loader, *, ttl: float | None = None, tags: Iterable[str] = ()
    ) -> Any:
        """The value of `key`: from L1, else Redis, else `loader()` (then stored in both).

        `ttl` (seconds) bounds the Redis entry and L1 keeps it at most `l1_ttl`; `tags` are
        the tags the key is filed under, the same on every call for one key. A loader's
        exception reaches every caller waiting on that load and nothing is stored."""
        ttl = self._ttl(ttl)
        if self._l1 is not None and self._l1_live:
            hit, value = self._l1.get(key, time.monotonic())
            if hit:
                self._count_read(L1_LAYER)
                return value
        flight = self._flights.get(key)
        if flight is None:
            flight = self._start_flight(key, loader, ttl, tuple(dict.fromkeys(tags)))
        else:
            self.stats.joined_flights += 1
        task = flight.task
        assert task is not None
        try:
            return await asyncio.shield(task)
        finally:
            # A caller cancelled while the load goes on got no answer: no read to count.
            if task.done() and flight.layer is not None:
                self._count_read(flight.layer)

    async def prime(
        self,
        keys: Sequence[str],
        load: Callable[[], Awaitable[Mapping[str, Any]]],
        *,
        ttl: float | None = None,
        tags: Iterable[str] = (),
    ) -> PrimeResult:
        """Fill the keys that are neither cached nor being filled from one call of `load`
        (cache warming), under the same lease guard as `get`."""
        ttl = self._ttl(ttl)
        tags = tuple(dict.fromkeys(tags))
        token = uuid.uuid4().hex
        leased: list[str] = []
        cached = busy = 0
        for key in dict.fromkeys(keys):
            code, _ = await self._lookup(keys=[key], args=[token, _ms(self.lease_ttl)])
            if int(code) == LEASED:
                leased.append(key)
            elif int(code) == HIT:
                cached += 1
            else:
                busy += 1
        if not leased:
            return PrimeResult(0, 0, cached, busy)
        for key in leased:
            await self._register_tags(key, tags)
        values = await self._load(load)
        filled = refused = 0
        for key in leased:
            if key not in values:
                await self._release(keys=[key], args=[token])
                continue
            if await self._fill(keys=[key], args=[token, self._dumps(values[key]), _ms(ttl)]):
                filled += 1
            else:
                refused += 1
        self.stats.fills += filled
        self._refused(refused)
        return PrimeResult(filled, refused, cached, busy)

    async def applied(self, invalidation_id: str, timeout: float) -> bool:
        """Wait until the broadcast carrying `invalidation_id` reached this process: from then
        on no read here returns a value older than that invalidation."""
        if invalidation_id in self._applied:
            return True
        waiter = self._waiters.setdefault(invalidation_id, _Waiter())
        waiter.count += 1
        try:
            await asyncio.wait_for(waiter.event.wait(), timeout)
            return True
        except TimeoutError:
            return False
        finally:
            waiter.count -= 1
            if waiter.count == 0 and self._waiters.get(invalidation_id) is waiter:
                del self._waiters[invalidation_id]

    # -- internals -----------------------------------------------------------------------

    def _count_read(self, layer: str) -> None:
        if layer == L1_LAYER:
            self.stats.l1_hits += 1
        elif layer == REDIS_LAYER:
            self.stats.redis_hits += 1
        else:
            self.stats.misses += 1
        self._series.read(layer)

    def _refused(self, write_backs: int) -> None:
        self.stats.fills_refused += write_backs
        if write_backs:
            self._series.lease_refusals.inc(write_backs)

    def _ttl(self, ttl: float | None) -> float:
        ttl = self.default_ttl if ttl is None else ttl
        if not 0 < ttl <= self.max_ttl:
            raise ValueError(f"ttl {ttl} s is outside (0, {self.max_ttl}] (max_ttl)")
        return ttl

    def _start_flight(self, key: str, loader: Loader, ttl: float, tags: tuple[str, ...]) -> _Flight:
        flight = _Flight(tags)
        flight.task = asyncio.create_task(
            self._fetch(key, loader, ttl, flight, self._connection_epoch)
        )
        self._flights[key] = flight

        def end(task: asyncio.Task[Any]) -> None:
            if self._flights.get(key) is flight:
                del self._flights[key]
            if not task.cancelled():
                task.exception()  # retrieved here too, in case every caller went away

        flight.task.add_done_callback(end)
        return flight

    async def _fetch(
        self, key: str, loader: Loader, ttl: float, flight: _Flight, epoch: int
    ) -> Any:
        value, keep = await self._through_redis(key, loader, ttl, flight)
        if (
            keep
            and self._l1 is not None
            and self._l1_live
            and not flight.stale
            and self._connection_epoch == epoch
        ):
            self._l1.put(key, value, time.monotonic() + min(ttl, self.l1_ttl), flight.tags)
        return value

    async def _load(self, loader: Loader) -> Any:
        self.stats.loads += 1
        with self._series.in_flight_loads.track_inprogress():
            return await loader()

    async def _through_redis(
        self, key: str, loader: Loader, ttl: float, flight: _Flight
    ) -> tuple[Any, bool]:
        """The value, and whether L1 may keep it: not when its write-back was refused, since
        that means an invalidation ran while it loaded. Sets the flight's answering layer."""
        token = uuid.uuid4().hex
        give_up_at = time.monotonic() + self.lease_wait
        delay = 0.002
        waited = False
        while True:
            try:
                code, payload = await self._lookup(keys=[key], args=[token, _ms(self.lease_ttl)])
            except REDIS_ERRORS as exc:
                return await self._load_without_redis(loader, exc, flight), True
            if int(code) == HIT:
                flight.layer = REDIS_LAYER
                return self._loads(payload), True
            if int(code) == LEASED:
                break
            if not waited:  # counted once per miss, however many times it looks again
                waited = True
                self.stats.lease_waits += 1
                self._series.lease_waits.inc()
            if time.monotonic() >= give_up_at:
                self.stats.lease_wait_timeouts += 1
                self._series.lease_wait_timeouts.inc()
                flight.layer = LOADER_LAYER
                return await self._load(loader), True
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)
        try:
            await self._register_tags(key, flight.tags)
        except REDIS_ERRORS as exc:
            # Unregistered, a tag invalidation would miss this key: serve without storing.
            return await self._load_without_redis(loader, exc, flight), True
        flight.layer = LOADER_LAYER
        value = await self._load(loader)
        try:
            filled = await self._fill(keys=[key], args=[token, self._dumps(value), _ms(ttl)])
        except REDIS_ERRORS as exc:
            self._redis_failed(exc)
            return value, True
        if filled:
            self.stats.fills += 1
        else:
            self._refused(1)
        return value, bool(filled)

    async def _load_without_redis(self, loader: Loader, exc: BaseException, flight: _Flight) -> Any:
        self._redis_failed(exc)
        flight.layer = LOADER_LAYER
        return await self._load(loader)

    def _redis_failed(self, exc: BaseException) -> None:
        self.stats.redis_errors += 1
        log.warning("cache: Redis unavailable, serving from the loader: %s", exc)

    async def _register_tags(self, key: str, tags: tuple[str, ...]) -> None:
        if not tags:
            return
        # A tag set outlives every value registered in it (TTL <= max_ttl, fill < lease_ttl).
        keep_ms = _ms(self.max_ttl + self.lease_ttl)
        pipe = self._redis.pipeline(transaction=False)
        for tag in tags:
            pipe.sadd(tag_set_key(tag), key)
            pipe.pexpire(tag_set_key(tag), keep_ms)
        await pipe.execute()

    # -- the L1 broadcast ------------------------------------------------------------------

    async def _listen(self) -> None:
        assert self._listener_redis is not None
        delay = 0.05
        while True:
            pubsub = self._listener_redis.pubsub()
            try:
                await pubsub.subscribe(L1_CHANNEL)
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is None:
                        continue
                    if message["type"] == "subscribe":
                        self._connected()
                        delay = 0.05
                    elif message["type"] == "message":
                        self._received(message["data"])
            except REDIS_ERRORS as exc:
                self._disconnected(exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
            finally:
                with contextlib.suppress(*REDIS_ERRORS):
                    await pubsub.aclose()

    def _connected(self) -> None:
        self._forget_everything()
        self._l1_live = True
        self._live.set()
        self.stats.subscriptions += 1

    def _disconnected(self, exc: BaseException) -> None:
        if self._l1_live:
            log.warning("cache: L1 broadcast lost (%s); L1 off until resubscribed", exc)
        self._l1_live = False
        self._live.clear()
        self._forget_everything()
        self.stats.disconnects += 1

    def _forget_everything(self) -> None:
        """What was cached or loading may have missed broadcasts: drop it all."""
        self._connection_epoch += 1
        if self._l1 is not None:
            self.stats.l1_dropped += self._l1.clear()
        for flight in self._flights.values():
            flight.stale = True
        self._flights.clear()

    def _received(self, raw: bytes) -> None:
        try:
            broadcast = Broadcast.decode(raw)
        except BroadcastError as exc:
            log.error("cache: %s; dropping all of L1 to stay safe", exc)
            self._forget_everything()
            return
        self.apply(broadcast)

    def apply(self, broadcast: Broadcast) -> None:
        """Drop what `broadcast` names from L1 and from the loads in flight."""
        self.stats.broadcasts += 1
        if self._l1 is not None:
            self.stats.l1_dropped += self._l1.drop(
                broadcast.keys, broadcast.patterns, broadcast.tags
            )
        keys = set(broadcast.keys)
        tags = set(broadcast.tags)
        patterns = [compile_glob(p) for p in broadcast.patterns]
        for key, flight in list(self._flights.items()):
            if (
                key in keys
                or tags.intersection(flight.tags)
                or any(p.fullmatch(key.encode()) for p in patterns)
            ):
                flight.stale = True
                del self._flights[key]
        for invalidation_id in broadcast.ids:
            self._applied[invalidation_id] = None
            waiter = self._waiters.get(invalidation_id)
            if waiter is not None:
                waiter.event.set()
        while len(self._applied) > self._remembered_ids:
            self._applied.popitem(last=False)
