-- The per-user cost report reads one user's month of ledger rows twice (hour of day, similar
-- requests). Through usage_events_user_time each row cost a heap page (~920 pages for a user's
-- ~900 events a month, 21 ms of the report's ~24 ms at 10 million events, bench/reads_at_scale.py).
-- The same key with the columns those reads use covers them: an index-only scan of a few
-- dozen index pages on the vacuumed months. It replaces the old index rather than adding one, so
-- a ledger insert still updates two indexes (wider entries: service, model, priority, cost).
-- Built on every partition inside this migration's transaction: ledger writes wait meanwhile.
CREATE INDEX usage_events_user_time_covering ON usage_events (user_id, occurred_at)
    INCLUDE (service, model, priority, cost_usd);
DROP INDEX usage_events_user_time;
