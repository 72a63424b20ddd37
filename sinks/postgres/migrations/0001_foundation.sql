-- Extensions the embedded PostgreSQL (pgserver) lacks are created only where available.
DO $$
DECLARE
    ext text;
BEGIN
    FOREACH ext IN ARRAY ARRAY['pg_trgm', 'btree_gist', 'pg_stat_statements'] LOOP
        IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = ext) THEN
            EXECUTE format('CREATE EXTENSION IF NOT EXISTS %I', ext);
        END IF;
    END LOOP;
END
$$;

-- Creates the monthly range partition of `parent` that holds `day`, if it is missing.
-- Partitions are named <parent>_yYYYYmMM.
CREATE OR REPLACE FUNCTION scribe_ensure_month_partition(parent text, day date)
RETURNS text
LANGUAGE plpgsql
AS $$
DECLARE
    first_day date := date_trunc('month', day)::date;
    partition_name text := format('%s_y%sm%s', parent, to_char(first_day, 'YYYY'), to_char(first_day, 'MM'));
BEGIN
    IF to_regclass(partition_name) IS NULL THEN
        BEGIN
            EXECUTE format(
                'CREATE TABLE IF NOT EXISTS %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                partition_name, parent, first_day, (first_day + interval '1 month')::date
            );
        EXCEPTION WHEN duplicate_table OR unique_violation THEN
            NULL; -- another session created it first
        END;
    END IF;
    RETURN partition_name;
END
$$;

-- The usage ledger: one row per event_id, ever. `usage_event_ids` is the guard that makes
-- that hold across monthly partitions (a partitioned table's unique keys must include the
-- partition key, which would let one event_id land in two months).
CREATE TABLE usage_event_ids (
    event_id text PRIMARY KEY
);

CREATE TABLE usage_events (
    event_id text NOT NULL,
    request_id text NOT NULL,
    user_id text NOT NULL,
    service text NOT NULL,
    model text NOT NULL,
    input_tokens bigint NOT NULL CHECK (input_tokens >= 0),
    output_tokens bigint NOT NULL CHECK (output_tokens >= 0),
    images integer NOT NULL CHECK (images >= 0),
    free_tier boolean NOT NULL,
    cost_usd numeric(24, 12) NOT NULL CHECK (cost_usd >= 0),
    occurred_at timestamptz NOT NULL,
    world_id text,
    latency_ms integer,
    priority text,
    ingested_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (event_id, occurred_at)
) PARTITION BY RANGE (occurred_at);

CREATE INDEX usage_events_user_time ON usage_events (user_id, occurred_at);
CREATE INDEX usage_events_model_time ON usage_events (service, model, occurred_at);

CREATE TABLE usage_daily (
    user_id text NOT NULL,
    day date NOT NULL,
    service text NOT NULL,
    model text NOT NULL,
    requests bigint NOT NULL,
    input_tokens bigint NOT NULL,
    output_tokens bigint NOT NULL,
    images bigint NOT NULL,
    free_tier_requests bigint NOT NULL,
    cost_usd numeric(24, 12) NOT NULL,
    PRIMARY KEY (user_id, day, service, model)
);
CREATE INDEX usage_daily_day ON usage_daily (day, service, model);

CREATE TABLE usage_monthly (
    user_id text NOT NULL,
    month date NOT NULL CHECK (extract(day FROM month) = 1),
    service text NOT NULL,
    model text NOT NULL,
    requests bigint NOT NULL,
    input_tokens bigint NOT NULL,
    output_tokens bigint NOT NULL,
    images bigint NOT NULL,
    free_tier_requests bigint NOT NULL,
    cost_usd numeric(24, 12) NOT NULL,
    PRIMARY KEY (user_id, month, service, model)
);
CREATE INDEX usage_monthly_month ON usage_monthly (month, service, model);

CREATE TABLE usage_hourly_by_model (
    hour timestamptz NOT NULL,
    service text NOT NULL,
    model text NOT NULL,
    requests bigint NOT NULL,
    input_tokens bigint NOT NULL,
    output_tokens bigint NOT NULL,
    images bigint NOT NULL,
    free_tier_requests bigint NOT NULL,
    cost_usd numeric(24, 12) NOT NULL,
    PRIMARY KEY (hour, service, model)
);
