"""The cache client's Prometheus families against a real Redis: every read counted once, under
the layer that answered it and the client's name, exactly as in its own `stats`; loads in
flight, lease waits, their timeouts and refused write-backs; and the hit ratio of a skewed
(Zipf) load read back from the /metrics exposition text."""

from __future__ import annotations

import asyncio
import math
import random
import uuid
from collections.abc import Awaitable, Callable

import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from cache import CacheClient
from cache.layout import LEASE_FIELD
from runtime.metrics import CACHE_READ_LAYERS
from tests.cache.test_client import counting

pytestmark = pytest.mark.integration

# The Zipf load: reads of `ZIPF_KEYS` keys, key k (1-based) drawn with weight 1 / k**ZIPF_S.
ZIPF_READS = 2_000
ZIPF_KEYS = 500
ZIPF_S = 1.2
ZIPF_SEED = 21


def unique_name(role: str) -> str:
    """A cache name of its own per test: the families are process-wide."""
    return f"{role}-{uuid.uuid4().hex[:8]}"


def exported(family: str, name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(family, {"cache": name, **labels}) or 0.0


def exported_reads(name: str) -> dict[str, float]:
    return {
        layer: exported("scribe_cache_reads_total", name, layer=layer)
        for layer in CACHE_READ_LAYERS
    }


def test_the_name_must_be_a_short_fixed_label() -> None:
    for bad in ("", "Worlds", "world:42", "9lives", "x" * 33, "user 7"):
        with pytest.raises(ValueError, match="fixed name per cache"):
            CacheClient("redis://127.0.0.1:1/0", name=bad)
    assert CacheClient("redis://127.0.0.1:1/0", name="world_state-v2").name == "world_state-v2"


async def test_reads_are_counted_once_by_the_layer_that_answered(
    redis_url: str, prefix: str
) -> None:
    key = f"{prefix}:k"
    a_name, b_name = unique_name("a"), unique_name("b")
    load, calls = counting("v", delay=0.05)
    async with CacheClient(redis_url, name=a_name) as a, CacheClient(redis_url, name=b_name) as b:
        # 20 callers, one load: each read waited for the loader, so each is a miss.
        assert await asyncio.gather(*(a.get(key, load) for _ in range(20))) == ["v"] * 20
        assert await a.get(key, load) == "v"  # now in a's L1
        # b shares Redis with a: its 5 concurrent callers join one Redis hit.
        assert await asyncio.gather(*(b.get(key, load) for _ in range(5))) == ["v"] * 5
        assert len(calls) == 1
        assert (a.stats.l1_hits, a.stats.redis_hits, a.stats.misses) == (1, 0, 20)
        assert (b.stats.l1_hits, b.stats.redis_hits, b.stats.misses) == (0, 5, 0)
        assert a.stats.hit_ratio == pytest.approx(1 / 21)
        assert exported_reads(a_name) == {"l1": 1, "redis": 0, "loader": 20}
        assert exported_reads(b_name) == {"l1": 0, "redis": 5, "loader": 0}


async def test_a_caller_cancelled_before_its_answer_is_not_a_read(
    redis_url: str, prefix: str
) -> None:
    name = unique_name("cancel")
    release = asyncio.Event()

    async def load() -> str:
        await release.wait()
        return "v"

    async with CacheClient(redis_url, name=name) as cache:
        first = asyncio.create_task(cache.get(f"{prefix}:k", load))
        gone = asyncio.create_task(cache.get(f"{prefix}:k", load))
        await asyncio.sleep(0.05)
        gone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gone
        release.set()
        assert await first == "v"
        assert cache.stats.reads == 1
        assert exported_reads(name) == {"l1": 0, "redis": 0, "loader": 1}


async def test_loads_in_flight_rise_while_a_loader_runs(redis_url: str, prefix: str) -> None:
    name = unique_name("flight")
    started, release = asyncio.Event(), asyncio.Event()

    async def load() -> str:
        started.set()
        await release.wait()
        return "v"

    async with CacheClient(redis_url, name=name) as cache:
        reads = [asyncio.create_task(cache.get(f"{prefix}:{i}", load)) for i in range(3)]
        await started.wait()
        await asyncio.sleep(0.05)  # every read is past Redis and in its loader
        assert exported("scribe_cache_in_flight_loads", name) == 3
        release.set()
        assert await asyncio.gather(*reads) == ["v"] * 3
        assert exported("scribe_cache_in_flight_loads", name) == 0


async def test_lease_waits_timeouts_and_refused_write_backs_are_exported(
    redis_url: str, redis_client: aioredis.Redis, prefix: str
) -> None:
    name = unique_name("lease")
    busy, invalidated = f"{prefix}:busy", f"{prefix}:invalidated"
    await redis_client.hset(busy, LEASE_FIELD, "another-process")
    await redis_client.pexpire(busy, 60_000)

    async def load_then_lose_the_lease() -> str:
        await redis_client.delete(invalidated)  # what an invalidation does meanwhile
        return "old"

    async with CacheClient(redis_url, name=name, lease_wait=0.05) as cache:
        assert await cache.get(busy, counting("mine")[0]) == "mine"
        assert await cache.get(invalidated, load_then_lose_the_lease) == "old"
        stats = cache.stats
        assert (stats.lease_waits, stats.lease_wait_timeouts, stats.fills_refused) == (1, 1, 1)
    assert exported("scribe_cache_lease_waits_total", name) == 1
    assert exported("scribe_cache_lease_wait_timeouts_total", name) == 1
    assert exported("scribe_cache_lease_refusals_total", name) == 1
    assert exported_reads(name) == {"l1": 0, "redis": 0, "loader": 2}
    assert await redis_client.hget(invalidated, "v") is None


def zipf_weights(keys: int, s: float) -> list[float]:
    return [1 / k**s for k in range(1, keys + 1)]


def expected_distinct(weights: list[float], draws: int) -> tuple[float, float]:
    """Mean and standard deviation of the number of distinct keys among `draws` independent
    draws: key k is never drawn with probability q_k = (1 - p_k)^draws, two keys j != k with
    (1 - p_j - p_k)^draws."""
    total = sum(weights)
    p = [w / total for w in weights]
    q = [(1 - pk) ** draws for pk in p]
    mean = sum(1 - qk for qk in q)
    variance = sum(qk * (1 - qk) for qk in q)
    for j, pj in enumerate(p):
        for k in range(j + 1, len(p)):
            variance += 2 * ((1 - pj - p[k]) ** draws - q[j] * q[k])
    return mean, math.sqrt(variance)


def expected_layers(reads: list[tuple[int, int]], clients: int) -> list[dict[str, int]]:
    """Per client, the layer that answers each read when reads run one after the other: a
    client's L1 has what it read before, Redis what any client read before, else the loader."""
    answered = [dict.fromkeys(CACHE_READ_LAYERS, 0) for _ in range(clients)]
    in_l1: list[set[int]] = [set() for _ in range(clients)]
    in_redis: set[int] = set()
    for client, key in reads:
        if key in in_l1[client]:
            layer = "l1"
        elif key in in_redis:
            layer = "redis"
        else:
            layer = "loader"
        answered[client][layer] += 1
        in_l1[client].add(key)
        in_redis.add(key)
    return answered


def scrape_reads(names: list[str]) -> dict[str, dict[str, float]]:
    """scribe_cache_reads_total per cache name and layer, from the exposition text /metrics
    serves."""
    found: dict[str, dict[str, float]] = {name: {} for name in names}
    for family in text_string_to_metric_families(generate_latest(REGISTRY).decode()):
        for sample in family.samples:
            if sample.name == "scribe_cache_reads_total" and sample.labels["cache"] in found:
                found[sample.labels["cache"]][sample.labels["layer"]] = sample.value
    return found


def hit_ratio(by_layer: dict[str, float]) -> float:
    return (by_layer.get("l1", 0) + by_layer.get("redis", 0)) / sum(by_layer.values())


async def test_zipf_reads_show_their_hit_ratio_on_metrics(redis_url: str, prefix: str) -> None:
    """Two app processes (two clients, one name each) read 2,000 Zipf-distributed keys of 500
    through one Redis. Every key's first read calls the loader, so the expected hit ratio is
    1 - E[distinct keys] / reads; the exact split per layer follows from the drawn sequence."""
    weights = zipf_weights(ZIPF_KEYS, ZIPF_S)
    rng = random.Random(ZIPF_SEED)
    keys = rng.choices(range(ZIPF_KEYS), weights=weights, k=ZIPF_READS)
    reads = [(rng.randrange(2), key) for key in keys]
    expected = expected_layers(reads, clients=2)
    mean_distinct, sd_distinct = expected_distinct(weights, ZIPF_READS)
    expected_ratio = 1 - mean_distinct / ZIPF_READS
    assert expected_ratio > 0.5  # the load is skewed enough to test the claim at all

    loaded: list[int] = []

    def loader(key: int) -> Callable[[], Awaitable[dict[str, int]]]:
        async def load() -> dict[str, int]:
            loaded.append(key)
            return {"key": key}

        return load

    names = [unique_name("zipf-a"), unique_name("zipf-b")]
    async with (
        CacheClient(redis_url, name=names[0], l1_ttl=600) as a,
        CacheClient(redis_url, name=names[1], l1_ttl=600) as b,
    ):
        clients = [a, b]
        for which, key in reads:
            value = await clients[which].get(f"{prefix}:{key}", loader(key), ttl=600)
            assert value == {"key": key}

    scraped = scrape_reads(names)
    for cache, name, want in zip(clients, names, expected, strict=True):
        stats = cache.stats
        assert scraped[name] == {
            "l1": stats.l1_hits,
            "redis": stats.redis_hits,
            "loader": stats.misses,
        }, name
        assert {k: v for k, v in want.items() if v} == scraped[name], name
        assert hit_ratio(scraped[name]) == pytest.approx(stats.hit_ratio)
    assert len(loaded) == len(set(keys)) == sum(s["loader"] for s in scraped.values())

    total = {layer: sum(s.get(layer, 0) for s in scraped.values()) for layer in CACHE_READ_LAYERS}
    observed_ratio = hit_ratio(total)
    assert observed_ratio == 1 - len(set(keys)) / ZIPF_READS
    # Within five standard deviations of the distinct-key count of the Zipf draw.
    assert observed_ratio == pytest.approx(expected_ratio, abs=5 * sd_distinct / ZIPF_READS)
    assert observed_ratio > 0.5
