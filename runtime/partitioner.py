"""Which partition a keyed message lands in, computed before it is sent."""

from __future__ import annotations

import functools

from aiokafka.partitioner import murmur2


@functools.lru_cache(maxsize=65536)
def partition_of(key: bytes, count: int) -> int:
    """The partition the producers' default partitioner (murmur2 over all `count` partitions)
    gives `key`; remembered, as the same keys come again and murmur2 is pure Python."""
    return int((murmur2(key) & 0x7FFFFFFF) % count)
