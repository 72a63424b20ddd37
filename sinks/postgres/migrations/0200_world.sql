-- World simulation: the event log, the latest state of each world, and NPC memories.
-- PostgreSQL is the durable truth: a worker rebuilds the worlds it owns from `world_state`,
-- and `scribe world replay` rebuilds any world from `world_events` alone.

-- One row per world: a checkpoint of its state (`version`, `tick`, `state`, `state_hash`:
-- the world after its first `version` logged inputs) and the head of its log
-- (`head_version`: the last `seq` written for it). Both move in the same transaction as the
-- log rows; the checkpoint moves only every few seconds per world (a world is loaded as its
-- checkpoint plus the inputs logged after it), the head with every batch, and a writer must
-- name the head it started from, so two workers can never interleave one world's log.
-- `active`, `last_activity_at` and `next_tick_at` are scheduling facts, not world state: they
-- tell a restarted worker which worlds to keep ticking and from when. The first six columns
-- are the shape the issue gives (other flows read and, in their tests, write rows of it): a
-- row without `head_version` has nothing logged after its checkpoint.
CREATE TABLE world_state (
    world_id text PRIMARY KEY,
    version bigint NOT NULL CHECK (version >= 0),
    tick bigint NOT NULL CHECK (tick >= 0),
    state jsonb NOT NULL,
    state_hash text NOT NULL,
    head_version bigint,
    active boolean NOT NULL DEFAULT true,
    last_activity_at timestamptz,
    next_tick_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now(),
    CHECK (head_version >= version)
);
CREATE INDEX world_state_active ON world_state (world_id) WHERE active;

-- Every input a world applied, in order (`seq` = the world's version after it; ordinal 0),
-- and what each input caused (ordinal 1..n). Range-partitioned by month on event time;
-- partitions are created ahead by the writer (and three months ahead here).
CREATE TABLE world_events (
    world_id text NOT NULL,
    seq bigint NOT NULL CHECK (seq >= 1),
    ordinal integer NOT NULL CHECK (ordinal >= 0),
    event_id text NOT NULL,
    type text NOT NULL,
    source text NOT NULL CHECK (source IN ('event', 'tick', 'derived')),
    tick bigint NOT NULL CHECK (tick >= 0),
    producer_version bigint,
    payload jsonb NOT NULL,
    occurred_at timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT clock_timestamp(),  -- when this row was written
    PRIMARY KEY (world_id, seq, ordinal, occurred_at)
) PARTITION BY RANGE (occurred_at);
CREATE INDEX world_events_payload ON world_events USING gin (payload jsonb_path_ops);
CREATE INDEX world_events_type_time ON world_events (type, occurred_at);

SELECT scribe_ensure_month_partition(
    'world_events', (date_trunc('month', now()) + make_interval(months => ahead))::date
)
FROM generate_series(0, 2) AS ahead;

-- The ids of the player and AI events each world applied: a repeated event is recognised
-- however long ago the first copy arrived (the state itself remembers only recent ids).
CREATE TABLE world_event_ids (
    world_id text NOT NULL,
    event_id text NOT NULL,
    seq bigint NOT NULL,
    PRIMARY KEY (world_id, event_id)
);

-- What NPCs (or the world) remember, hash-partitioned by world into 16 partitions.
CREATE TABLE memories (
    world_id text NOT NULL,
    memory_id text NOT NULL,
    npc_id text,
    content text NOT NULL,
    importance smallint NOT NULL CHECK (importance BETWEEN 1 AND 10),
    tick bigint NOT NULL,
    occurred_at timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    content_search tsvector GENERATED ALWAYS AS (to_tsvector('english', content)) STORED,
    PRIMARY KEY (world_id, memory_id)
) PARTITION BY HASH (world_id);

CREATE TABLE memories_p00 PARTITION OF memories FOR VALUES WITH (MODULUS 16, REMAINDER 0);
CREATE TABLE memories_p01 PARTITION OF memories FOR VALUES WITH (MODULUS 16, REMAINDER 1);
CREATE TABLE memories_p02 PARTITION OF memories FOR VALUES WITH (MODULUS 16, REMAINDER 2);
CREATE TABLE memories_p03 PARTITION OF memories FOR VALUES WITH (MODULUS 16, REMAINDER 3);
CREATE TABLE memories_p04 PARTITION OF memories FOR VALUES WITH (MODULUS 16, REMAINDER 4);
CREATE TABLE memories_p05 PARTITION OF memories FOR VALUES WITH (MODULUS 16, REMAINDER 5);
CREATE TABLE memories_p06 PARTITION OF memories FOR VALUES WITH (MODULUS 16, REMAINDER 6);
CREATE TABLE memories_p07 PARTITION OF memories FOR VALUES WITH (MODULUS 16, REMAINDER 7);
CREATE TABLE memories_p08 PARTITION OF memories FOR VALUES WITH (MODULUS 16, REMAINDER 8);
CREATE TABLE memories_p09 PARTITION OF memories FOR VALUES WITH (MODULUS 16, REMAINDER 9);
CREATE TABLE memories_p10 PARTITION OF memories FOR VALUES WITH (MODULUS 16, REMAINDER 10);
CREATE TABLE memories_p11 PARTITION OF memories FOR VALUES WITH (MODULUS 16, REMAINDER 11);
CREATE TABLE memories_p12 PARTITION OF memories FOR VALUES WITH (MODULUS 16, REMAINDER 12);
CREATE TABLE memories_p13 PARTITION OF memories FOR VALUES WITH (MODULUS 16, REMAINDER 13);
CREATE TABLE memories_p14 PARTITION OF memories FOR VALUES WITH (MODULUS 16, REMAINDER 14);
CREATE TABLE memories_p15 PARTITION OF memories FOR VALUES WITH (MODULUS 16, REMAINDER 15);

CREATE INDEX memories_content_search ON memories USING gin (content_search);
CREATE INDEX memories_npc ON memories (world_id, npc_id, tick);

-- Substring search on memory content where pg_trgm exists (the embedded PostgreSQL lacks it).
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'pg_trgm') THEN
        CREATE EXTENSION IF NOT EXISTS pg_trgm;
        CREATE INDEX memories_content_trgm ON memories USING gin (content gin_trgm_ops);
    END IF;
END
$$;
