-- Usage aggregation (issue 5): ledger partition upkeep, free-tier image counts, the price
-- catalog version that priced an event, budgets, and the transactional outbox for budget
-- alerts and budget state.

-- Free-tier images per rollup row: the free-tier share of image generation is
-- free_tier_images / images.
ALTER TABLE usage_daily ADD COLUMN free_tier_images bigint NOT NULL DEFAULT 0;
ALTER TABLE usage_monthly ADD COLUMN free_tier_images bigint NOT NULL DEFAULT 0;
ALTER TABLE usage_hourly_by_model ADD COLUMN free_tier_images bigint NOT NULL DEFAULT 0;

-- Per-model reads over time use usage_hourly_by_model; on the ledger this index only cost
-- write throughput (every ledger row updates every index).
DROP INDEX IF EXISTS usage_events_model_time;

-- The catalog version that priced an event; NULL when the producer sent cost_usd.
ALTER TABLE usage_events ADD COLUMN price_catalog_version text;

-- Makes sure the ledger partition holding `day` exists and is attached. A partition that the
-- retention setting detached is attached again when a late event for its month arrives.
CREATE OR REPLACE FUNCTION scribe_ensure_usage_partition(day date)
RETURNS text
LANGUAGE plpgsql
AS $$
DECLARE
    first_day date := date_trunc('month', day)::date;
    partition_name text := scribe_ensure_month_partition('usage_events', day);
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_inherits
        WHERE inhrelid = to_regclass(partition_name) AND inhparent = 'usage_events'::regclass
    ) THEN
        BEGIN
            EXECUTE format(
                'ALTER TABLE usage_events ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                partition_name, first_day, (first_day + interval '1 month')::date
            );
        EXCEPTION WHEN OTHERS THEN
            -- Another session attached it first; anything else is a real error.
            IF NOT EXISTS (
                SELECT 1 FROM pg_inherits
                WHERE inhrelid = to_regclass(partition_name)
                  AND inhparent = 'usage_events'::regclass
            ) THEN
                RAISE;
            END IF;
        END;
    END IF;
    RETURN partition_name;
END
$$;

-- Detaches the ledger partitions whose whole month lies before `cutoff` (a first of month);
-- returns their names. The rollups keep those months' totals.
CREATE OR REPLACE FUNCTION scribe_detach_usage_partitions(cutoff date)
RETURNS SETOF text
LANGUAGE plpgsql
AS $$
DECLARE
    child text;
BEGIN
    FOR child IN
        SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'usage_events'::regclass
          AND c.relname ~ '^usage_events_y[0-9]{4}m[0-9]{2}$'
          AND to_date(substring(c.relname FROM 14), '"y"YYYY"m"MM') < cutoff
        ORDER BY c.relname
    LOOP
        EXECUTE format('ALTER TABLE usage_events DETACH PARTITION %I', child);
        RETURN NEXT child;
    END LOOP;
END
$$;

-- A monthly budget per user, set with `scribe budget set USER USD`.
CREATE TABLE budgets (
    user_id text PRIMARY KEY,
    monthly_usd numeric(24, 12) NOT NULL CHECK (monthly_usd > 0),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- One row per user, month and threshold, ever: the unique key is what makes an alert happen
-- once, whatever the batching, redelivery or number of workers. Rows are inserted in the
-- transaction that adds the spend; `published_at` is set once `budget.alerts` acknowledged.
CREATE TABLE budget_alerts (
    id bigserial PRIMARY KEY,
    user_id text NOT NULL,
    month date NOT NULL CHECK (extract(day FROM month) = 1),
    threshold_pct integer NOT NULL CHECK (threshold_pct BETWEEN 1 AND 1000),
    budget_usd numeric(24, 12) NOT NULL,
    spent_usd numeric(24, 12) NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz,
    UNIQUE (user_id, month, threshold_pct)
);
CREATE INDEX budget_alerts_unpublished ON budget_alerts (id) WHERE published_at IS NULL;

-- The latest budget state per user for the compacted `budget.state` topic. `version` grows
-- with every change (drawn while the user's budget row is locked), so a reader keeps the
-- highest; the row is pending until `published_version` catches up. A NULL budget means the
-- budget was removed and is published as a tombstone.
CREATE SEQUENCE budget_state_version;
CREATE TABLE budget_state (
    user_id text PRIMARY KEY,
    month date NOT NULL CHECK (extract(day FROM month) = 1),
    budget_usd numeric(24, 12),
    spent_usd numeric(24, 12) NOT NULL,
    version bigint NOT NULL,
    published_version bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX budget_state_unpublished ON budget_state (user_id) WHERE version > published_version;
