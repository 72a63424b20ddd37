"""The one place that builds Kafka clients. Bootstrap servers, security (TLS, SASL), client ids
and the timeouts a single-process broker needs all come from the settings, so every consumer,
producer and admin client of a worker reaches a secured cluster the same way."""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from runtime.settings import ResolvedSettings

# With fast_rebalance (the embedded broker, and the engine tests' kill runs) a member that died
# is replaced after 6 s (Kafka's least by default, `group.min.session.timeout.ms`) instead of
# aiokafka's 10 s, and a rebalance waits at most 5 s for members to rejoin (aiokafka: the
# session timeout). The embedded broker holds a new group's first join for half the session
# timeout: 3 s here, 5 s at 10 s.
FAST_REBALANCE_TIMEOUTS = {
    "rebalance_timeout_ms": 5_000,
    "session_timeout_ms": 6_000,
    "heartbeat_interval_ms": 1_000,
}


def group_id(app_id: str, flow: str) -> str:
    """The consumer group of `flow` in the workers of `app_id`: `<app_id>.<flow>`."""
    return f"{app_id}.{flow}"


def consumer(
    settings: ResolvedSettings, group: str | None, *topics: str, **options: Any
) -> AIOKafkaConsumer:
    """A consumer in `group` (None: no group, offsets only read) subscribed to `topics`. Offsets
    are committed by the caller, after its sinks stored what they cover; a new group starts at
    the beginning of the log. `options` override any of these."""
    config: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "group_id": group,
        "client_id": f"{settings.base.app_id}.{group or 'reader'}",
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        **(FAST_REBALANCE_TIMEOUTS if settings.base.fast_rebalance else {}),
        **settings.kafka_client_options,
        **options,
    }
    return AIOKafkaConsumer(*topics, **config)


def producer(settings: ResolvedSettings, **options: Any) -> AIOKafkaProducer:
    """A producer that waits for every in-sync replica (`acks=all`) unless told otherwise."""
    config: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "client_id": f"{settings.base.app_id}.producer",
        "acks": "all",
        **settings.kafka_client_options,
        **options,
    }
    return AIOKafkaProducer(**config)


def admin(settings: ResolvedSettings, **options: Any) -> AIOKafkaAdminClient:
    """An admin client (topics, cluster and group metadata) with the same security."""
    config: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "client_id": f"{settings.base.app_id}.admin",
        "request_timeout_ms": 30_000,
        **settings.kafka_client_options,
        **options,
    }
    return AIOKafkaAdminClient(**config)
