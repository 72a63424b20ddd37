"""Cache invalidation fan-out: cache.invalidations -> coalesce -> Redis (keys, patterns, tags)
-> L1 broadcast -> CDN; what cannot be delivered -> cache.invalidations.dlq. Also cache
warming on `world_loaded` world events."""
