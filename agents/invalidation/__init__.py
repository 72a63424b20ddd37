"""Cache invalidation fan-out: cache.invalidations -> Redis."""
