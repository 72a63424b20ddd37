"""Redis sink: exact keys removed with UNLINK in one pipeline per batch."""

from __future__ import annotations

from collections.abc import Iterable

import redis.asyncio as aioredis
import redis.exceptions

RETRYABLE = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)

UNLINK_CHUNK = 500


class RedisInvalidator:
    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client

    async def unlink_keys(self, keys: Iterable[str]) -> int:
        """Remove the keys; return how many existed."""
        unique = list(dict.fromkeys(keys))
        if not unique:
            return 0
        pipe = self.client.pipeline(transaction=False)
        for start in range(0, len(unique), UNLINK_CHUNK):
            pipe.unlink(*unique[start : start + UNLINK_CHUNK])
        removed = await pipe.execute()
        return int(sum(removed))
