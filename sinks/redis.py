"""Redis sink of the invalidation fan-out: exact keys, patterns and tags, then the L1 broadcast.

- Exact keys: UNLINK in pipelines, in chunks.
- Patterns: SCAN MATCH with a COUNT (never KEYS, which blocks the server), on every primary
  when the URL points at a cluster.
- Tags: the cache client keeps a set per tag (`cache.layout`). On one server a script pops a
  chunk of members and UNLINKs them atomically, so a key registered concurrently is either
  removed with its lease or registered after the pop. A cluster cannot run that script across
  slots: there the members are read with SSCAN and unlinked, and the set is left to expire.
- Tag sets are bookkeeping: a pattern or an exact key never removes one.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.cluster import RedisCluster

from cache.layout import L1_CHANNEL, Broadcast, is_tag_set_key, tag_set_key

log = logging.getLogger(__name__)

RETRYABLE = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
    OSError,
)

UNLINK_CHUNK = 500
SCAN_COUNT = 1000
TAG_POP_CHUNK = 500

# KEYS[1] a tag set; ARGV[1] how many members to pop. Returns {popped, of which existed}.
POP_AND_UNLINK = """
local members = redis.call('SPOP', KEYS[1], ARGV[1])
if #members == 0 then return {0, 0} end
return {#members, redis.call('UNLINK', unpack(members))}
"""


@dataclass(frozen=True)
class Applied:
    """What one `apply` call did: targets handled, and keys that existed and were removed."""

    keys: int
    patterns: int
    tags: int
    removed: int
    skipped_reserved: int


class RedisInvalidator:
    def __init__(self, client: aioredis.Redis | RedisCluster) -> None:
        self.client = client
        self.is_cluster = isinstance(client, RedisCluster)
        self._pop_and_unlink = client.register_script(POP_AND_UNLINK)

    @classmethod
    async def connect(cls, url: str, options: Mapping[str, Any] | None = None) -> RedisInvalidator:
        """A cluster client when the server at `url` runs in cluster mode, else a plain one.
        `options`: password and TLS (`RedisSecurity.redis_kwargs`)."""
        options = options or {}
        probe = aioredis.from_url(url, **options)
        try:
            info = await probe.info("cluster")
        finally:
            await probe.aclose()
        if info.get("cluster_enabled") == 1:
            cluster = RedisCluster.from_url(url, **options)
            await cluster.initialize()  # learns the primaries, which `_scan` walks
            return cls(cluster)
        return cls(aioredis.from_url(url, **options))

    async def close(self) -> None:
        await self.client.aclose()

    async def apply(
        self, keys: Iterable[str], patterns: Iterable[str], tags: Iterable[str]
    ) -> Applied:
        """Remove every target; safe to repeat (a retry after a failure redoes it all)."""
        keys = list(dict.fromkeys(keys))
        allowed = [k for k in keys if not is_tag_set_key(k)]
        skipped = len(keys) - len(allowed)
        if skipped:
            log.warning("redis: skipped %d key(s) in the reserved tag-set namespace", skipped)
        patterns = list(dict.fromkeys(patterns))
        tags = list(dict.fromkeys(tags))
        removed = await self.unlink_keys(allowed)
        removed += await self.unlink_matching(patterns)
        removed += await self.unlink_tagged(tags)
        return Applied(len(allowed), len(patterns), len(tags), removed, skipped)

    async def unlink_keys(self, keys: Iterable[str]) -> int:
        """Remove the keys; return how many existed."""
        unique = list(dict.fromkeys(keys))
        if not unique:
            return 0
        if isinstance(self.client, RedisCluster):
            # A cluster pipeline groups single-key commands by node; multi-key UNLINK would
            # have to span slots. (Its `unlink` method is a coroutine; this queues.)
            cluster_pipe = self.client.pipeline()
            for key in unique:
                cluster_pipe.execute_command("UNLINK", key)
            return int(sum(await cluster_pipe.execute()))
        pipe = self.client.pipeline(transaction=False)
        for start in range(0, len(unique), UNLINK_CHUNK):
            pipe.unlink(*unique[start : start + UNLINK_CHUNK])
        return int(sum(await pipe.execute()))

    async def unlink_matching(self, patterns: Iterable[str]) -> int:
        removed = 0
        for pattern in patterns:
            batch: list[str] = []
            async for key in self._scan(pattern):
                if is_tag_set_key(key):
                    continue
                batch.append(key)
                if len(batch) >= UNLINK_CHUNK:
                    removed += await self.unlink_keys(batch)
                    batch = []
            removed += await self.unlink_keys(batch)
        return removed

    async def _scan(self, pattern: str) -> AsyncIterator[str]:
        if isinstance(self.client, RedisCluster):
            for node in self.client.get_primaries():
                async for raw in self.client.scan_iter(
                    match=pattern, count=SCAN_COUNT, target_nodes=node
                ):
                    yield _text(raw)
            return
        async for raw in self.client.scan_iter(match=pattern, count=SCAN_COUNT):
            yield _text(raw)

    async def unlink_tagged(self, tags: Iterable[str]) -> int:
        tags = list(dict.fromkeys(tags))
        if not tags:
            return 0
        if isinstance(self.client, RedisCluster):
            return await self._unlink_tagged_on_cluster(tags)
        removed = 0
        pending = tags
        while pending:
            pipe = self.client.pipeline(transaction=False)
            for tag in pending:
                await self._pop_and_unlink(
                    keys=[tag_set_key(tag)], args=[TAG_POP_CHUNK], client=pipe
                )
            rounds = await pipe.execute()
            removed += sum(int(existed) for _, existed in rounds)
            # A full chunk means the set may hold more; members added meanwhile are fine to
            # remove too, so this ends once a round pops less than a chunk.
            pending = [
                tag
                for tag, (popped, _) in zip(pending, rounds, strict=True)
                if int(popped) >= TAG_POP_CHUNK
            ]
        return removed

    async def _unlink_tagged_on_cluster(self, tags: list[str]) -> int:
        assert isinstance(self.client, RedisCluster)
        removed = 0
        for tag in tags:
            batch: list[str] = []
            async for raw in self.client.sscan_iter(tag_set_key(tag), count=SCAN_COUNT):
                batch.append(_text(raw))
                if len(batch) >= UNLINK_CHUNK:
                    removed += await self.unlink_keys(batch)
                    batch = []
            removed += await self.unlink_keys(batch)
        return removed

    async def broadcast(self, message: Broadcast) -> int:
        """Tell every app process to drop its in-process entries; returns the receivers."""
        return int(await self.client.publish(L1_CHANNEL, message.encode()))


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw
