"""Where the pipeline's results land: PostgreSQL, Redis and the CDN."""
