"""The Quix Streams peer: the same daily sums as `faust_table_sums.py` (requests, tokens,
images, free-tier counts, exact cost) in an idiomatic stateful StreamingDataFrame, one state
update per event (RocksDB state with its changelog topic, at-least-once).

Run by the `peer.quixstreams` case (`bench/cases/usage.py`) as a child process:
    python bench/cases/quix_sums.py APP_ID EXPECTED_EVENTS RESULT_FILE
It writes `<events> <seconds from the first to the last event>` to RESULT_FILE once it has
processed EXPECTED_EVENTS events, then stops.
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from quixstreams import Application, State

from agents.usage.pricing import Priced, UsageLimits, price_usage
from runtime.settings import Settings, kafka_bootstrap_servers
from schemas import DecodeError, decode
from schemas.events import UsageEvent
from schemas.model_catalog import load_catalog
from topics.catalog import USAGE_EVENTS


def build_app(app_id: str, expected: int, result_file: Path) -> Application:
    base = Settings.from_env()
    settings = base.require()
    app = Application(
        broker_address=",".join(kafka_bootstrap_servers(settings.kafka_url)),
        consumer_group=app_id,
        auto_offset_reset="earliest",
        state_dir=str(base.state_dir / "quix-state"),
        loglevel="WARNING",
    )
    topic = app.topic(USAGE_EVENTS.name, key_deserializer="bytes", value_deserializer="bytes")
    catalog, limits = load_catalog(), UsageLimits()
    progress = {"count": 0, "first": 0.0}

    def sum_usage(value: bytes, state: State[Any, Any]) -> None:
        progress["count"] += 1
        if progress["count"] == 1:
            progress["first"] = time.monotonic()
        try:
            event = decode(value, UsageEvent)
        except DecodeError:
            return
        priced = price_usage(event, catalog, limits, datetime.now(UTC))
        if isinstance(priced, Priced):
            key = f"{event.occurred_at.date()}|{event.service}|{event.model}"
            sums: list[Any] = state.get(key) or [0, 0, 0, 0, 0, 0, "0"]
            state.set(
                key,
                [
                    sums[0] + 1,
                    sums[1] + event.input_tokens,
                    sums[2] + event.output_tokens,
                    sums[3] + event.images,
                    sums[4] + int(event.free_tier),
                    sums[5] + (event.images if event.free_tier else 0),
                    str(Decimal(sums[6]) + priced.cost_usd),
                ],
            )
        if progress["count"] == expected:
            elapsed = time.monotonic() - progress["first"]
            result_file.write_text(f"{expected} {elapsed}\n")
            app.stop()

    app.dataframe(topic).update(sum_usage, stateful=True)
    return app


def main() -> None:
    app_id, expected, result_file = sys.argv[1:4]
    build_app(app_id, int(expected), Path(result_file)).run()


if __name__ == "__main__":
    main()
