"""The platform's cache client: in-process L1 -> Redis -> loader, kept fresh by the
invalidation pipeline (`agents/invalidation`) and guarded against stale sets by leases.

App code (game servers, web backends) imports `CacheClient` from here; the pipeline's sinks
share `cache.layout`, the Redis layout both sides must agree on.
"""

from cache.client import CacheClient, CacheStats
from cache.layout import Broadcast

__all__ = ["Broadcast", "CacheClient", "CacheStats"]
