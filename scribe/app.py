"""The Faust app: one worker process runs every agent and serves /metrics, /health, /ready and
the live /dashboard."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faust

from agents.context import Resources
from runtime.metrics import ASSIGNED_PARTITIONS
from runtime.settings import ResolvedSettings, faust_broker_url
from topics.catalog import TOPICS
from topics.dlq import DEAD_LETTER_REQUEST_BYTES


def faust_settings(settings: ResolvedSettings) -> dict[str, Any]:
    base = settings.base
    config: dict[str, Any] = {
        "broker": faust_broker_url(settings.kafka_url),
        "store": "memory://",
        "web_port": base.web_port,
        "web_bind": base.web_host,
        "web_host": base.web_host,
        "topic_partitions": base.topic_partitions,
        "topic_replication_factor": base.topic_replication,
        "key_serializer": "raw",
        "value_serializer": "raw",
        "consumer_auto_offset_reset": "earliest",
        "autodiscover": False,
        "broker_commit_interval": 1.0,
        # Dead letters carry the original bytes (up to 1 MiB) plus headers.
        "producer_max_request_size": DEAD_LETTER_REQUEST_BYTES,
        # Batch what agents produce for up to 5 ms, as Kafka's own producer does since 4.0:
        # unbatched, the router's decide stage ran at half the rate on the embedded broker.
        "producer_linger": 0.005,
        "datadir": str(base.state_dir / "worker" / base.app_id),
        "processing_guarantee": base.processing_guarantee,
    }
    credentials = base.security.kafka.faust_credentials()
    if credentials is not None:
        config["broker_credentials"] = credentials
    if base.fast_rebalance:
        # A single-process broker answers at once; Kafka's defaults would hold every worker
        # start for ~30 s: at each join the group coordinator waits up to the rebalance timeout
        # for every member it knows to rejoin. The engine tests set it on Apache Kafka too, so a
        # SIGKILLed worker's partitions move after 10 s (the session timeout).
        config.update(
            broker_rebalance_timeout=5,
            broker_session_timeout=10,
            broker_heartbeat_interval=1,
        )
    return config


def count_assignment(assigned: Any) -> None:
    """Per pipeline topic, how many partitions this worker holds: how evenly a group of
    workers shares the load shows on every worker's /metrics."""
    held = Counter(tp.topic for tp in assigned)
    for spec in TOPICS:
        ASSIGNED_PARTITIONS.labels(topic=spec.name).set(held[spec.name])


def create_app(settings: ResolvedSettings) -> tuple[faust.App, Resources]:
    from agents import register_all
    from scribe import observability

    config = faust_settings(settings)
    Path(config["datadir"]).mkdir(parents=True, exist_ok=True)
    app = faust.App(settings.base.app_id, **config)
    if settings.base.fast_rebalance:
        from scribe.faust_fetch_wait import use_short_fetch_wait

        use_short_fetch_wait(app)
    resources = Resources(app, settings)
    register_all(app, resources)
    observability.register(app, resources)

    @app.on_partitions_assigned.connect
    async def _count_assignment(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        count_assignment(args[0])

    @app.on_before_shutdown.connect
    async def _close_resources(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        await resources.close()

    return app, resources


async def prepare(settings: ResolvedSettings, report: Callable[[str], None]) -> None:
    """What a worker needs before it consumes: the catalog's topics and the schema."""
    from sinks.postgres.migrate import migrate
    from topics.admin import ensure_topics

    created = await ensure_topics(settings)
    if created:
        report(f"created topics: {', '.join(created)}")
    await migrate(
        settings.database_url,
        report=report,
        connect_options=settings.base.security.postgres.asyncpg_kwargs(),
    )
