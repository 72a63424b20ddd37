"""The baseline the usage consumer is measured against: an idiomatic per-event Faust agent
that keeps the same daily sums (requests, tokens, images, free-tier counts, exact cost) in a
Faust Table, one table update per event.

Run by the `peer.faust_table` case (`bench/cases/usage.py`) as a child process:
    python bench/cases/faust_table_sums.py APP_ID EXPECTED_EVENTS RESULT_FILE
It writes `<events> <seconds from the first to the last event>` to RESULT_FILE once it has
processed EXPECTED_EVENTS events, and keeps running until it is stopped.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import faust

from agents.usage.pricing import Priced, UsageLimits, price_usage
from devkit.stack import fill_environment
from devkit.stack.processes import free_port
from runtime.settings import Settings
from schemas import DecodeError, decode
from schemas.events import UsageEvent
from schemas.model_catalog import load_catalog
from scribe.app import faust_settings
from topics.catalog import USAGE_EVENTS


def build_app(app_id: str, web_port: int, expected: int, result_file: Path) -> faust.App:
    fill_environment(os.environ, Settings.from_env().state_dir)
    settings = Settings.from_env().require()
    config = faust_settings(settings) | {"web_port": web_port, "datadir": f"/tmp/{app_id}"}
    config["value_serializer"] = "json"
    app = faust.App(app_id, **config)
    topic = app.topic(
        USAGE_EVENTS.name,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )
    daily = app.Table("usage-daily-sums", default=lambda: None)
    catalog, limits = load_catalog(), UsageLimits()
    progress = {"count": 0, "first": 0.0}

    @app.agent(topic)
    async def sum_usage(stream: Any) -> None:
        async for value in stream:
            try:
                event = decode(value, UsageEvent)
            except DecodeError:
                continue
            priced = price_usage(event, catalog, limits, datetime.now(UTC))
            if not isinstance(priced, Priced):
                continue
            key = f"{event.user_id}|{event.occurred_at.date()}|{event.service}|{event.model}"
            sums = daily[key] or [0, 0, 0, 0, 0, 0, "0"]
            daily[key] = [
                sums[0] + 1,
                sums[1] + event.input_tokens,
                sums[2] + event.output_tokens,
                sums[3] + event.images,
                sums[4] + int(event.free_tier),
                sums[5] + (event.images if event.free_tier else 0),
                str(Decimal(sums[6]) + priced.cost_usd),
            ]
            progress["count"] += 1
            if progress["count"] == 1:
                progress["first"] = time.monotonic()
            if progress["count"] == expected:
                elapsed = time.monotonic() - progress["first"]
                await asyncio.to_thread(result_file.write_text, f"{expected} {elapsed}\n")

    return app


def main() -> None:
    app_id, expected, result_file = sys.argv[1:4]
    app = build_app(app_id, free_port(), int(expected), Path(result_file))
    worker = faust.Worker(app, loglevel="warning", quiet=True)
    sys.argv = sys.argv[:1]
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
