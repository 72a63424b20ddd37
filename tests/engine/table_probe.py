"""A Faust app with one table, run as its own worker by `test_table_recovery`.

It adds each message's amount to its key's total in a Table and serves the table on /table. It
runs with the pipeline's own Faust settings (`scribe.app.faust_settings`: memory store, so a
restarted worker rebuilds every table from its changelog topic), so it recovers the way the
pipeline's tables (quotas, world state) will.

    TABLE_PROBE_TOPIC=<topic> python -m tests.engine.table_probe worker
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import faust

from runtime.settings import Settings
from scribe.app import faust_settings

TOPIC_VAR = "TABLE_PROBE_TOPIC"  # each test its own input topic, created before the probe starts


def create_probe_app() -> faust.App:
    settings = Settings.from_env().require()
    config = faust_settings(settings)
    Path(config["datadir"]).mkdir(parents=True, exist_ok=True)
    app = faust.App(settings.base.app_id, **config)
    amounts = app.topic(
        os.environ[TOPIC_VAR],
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.base.topic_partitions,
    )
    totals = app.Table("totals", default=int, partitions=settings.base.topic_partitions)

    @app.agent(amounts)
    async def add_amounts(stream: Any) -> None:
        async for key, value in stream.items():
            totals[key.decode()] += int(value)

    @app.page("/table")
    async def table(web: Any, request: Any) -> Any:
        return web.json(dict(totals.items()))

    @app.page("/health")
    async def health(web: Any, request: Any) -> Any:
        return web.json({"status": "healthy"})

    return app


if __name__ == "__main__":
    create_probe_app().main()
