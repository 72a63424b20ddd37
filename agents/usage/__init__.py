"""Usage aggregation: usage.events -> exact cost tables in PostgreSQL."""
