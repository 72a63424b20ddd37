-- Every usage batch adds to rollup rows that earlier batches made. At the default fill factor
-- (100) the rollup pages are full, so 43 % of those updates wrote the new row version to another
-- page and a new entry into each of the table's two indexes. With half of each page left free,
-- the new version stays on its page (a HOT update: no index entry, and the old version is
-- reclaimed on that page). Measured with `python -m bench.ledger_write`: every update HOT, and
-- PostgreSQL's CPU per event 23-26 us against 26-28 (bench/README.md, "Rollup pages with room").
-- The setting applies to pages written from now on: pages already full stay so until a rewrite
-- (VACUUM FULL, which locks the table) or until their rows move by a non-HOT update.
ALTER TABLE usage_daily SET (fillfactor = 50);
ALTER TABLE usage_monthly SET (fillfactor = 50);
ALTER TABLE usage_hourly_by_model SET (fillfactor = 50);
