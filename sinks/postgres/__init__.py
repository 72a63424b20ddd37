"""PostgreSQL: migrations and the batching sinks that write the pipeline's tables."""
