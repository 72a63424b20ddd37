"""The live dashboard: figures from the worker's registry, the SSE feed, and its one page."""
