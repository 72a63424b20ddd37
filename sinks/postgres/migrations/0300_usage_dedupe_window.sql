-- Issue 19: the dedupe guard no longer grows without bound. Each guard row carries the UTC
-- month of its event; detaching a month's ledger partition (the retention setting) deletes that
-- month's guard rows in the same transaction, so the guard holds the ids of the retained
-- months only. An event replayed for a detached month re-attaches its partition, where the
-- ledger's own key (event_id, occurred_at) still refuses a second copy of it.
ALTER TABLE usage_event_ids ADD COLUMN month date;
UPDATE usage_event_ids g
SET month = date_trunc('month', e.occurred_at AT TIME ZONE 'UTC')::date
FROM usage_events e
WHERE e.event_id = g.event_id;
-- Ids whose ledger rows were already detached are past the window.
DELETE FROM usage_event_ids WHERE month IS NULL;
ALTER TABLE usage_event_ids ALTER COLUMN month SET NOT NULL;

CREATE OR REPLACE FUNCTION scribe_detach_usage_partitions(cutoff date)
RETURNS SETOF text
LANGUAGE plpgsql
AS $$
DECLARE
    child text;
    detached boolean := false;
BEGIN
    FOR child IN
        SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'usage_events'::regclass
          AND c.relname ~ '^usage_events_y[0-9]{4}m[0-9]{2}$'
          AND to_date(substring(c.relname FROM 14), '"y"YYYY"m"MM') < cutoff
        ORDER BY c.relname
    LOOP
        EXECUTE format('ALTER TABLE usage_events DETACH PARTITION %I', child);
        detached := true;
        RETURN NEXT child;
    END LOOP;
    -- Once a month: a scan of the guard, rather than an index on month that every insert pays.
    IF detached THEN
        DELETE FROM usage_event_ids WHERE month < cutoff;
    END IF;
END
$$;
