"""The Faust app: one worker process hosts every flow and serves /metrics, /health, /ready and
the live /dashboard. `StoppingWorker` runs it and stops it in order, within deadlines."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faust
from faust.app.base import BootStrategy

from agents.context import Resources
from runtime import tracing
from runtime.event_loop import running_loop_name
from runtime.logs import JsonFormatter, RepeatLimiter, limit_repeats
from runtime.settings import ResolvedSettings, faust_broker_url
from sinks.retry import STOPPING
from topics.dlq import DEAD_LETTER_REQUEST_BYTES

log = logging.getLogger(__name__)

# A stop's deadlines, in seconds from its start (SIGTERM): the flows and Faust's services stop
# first; then the shared connections close (`Resources.close`, each within its own deadline);
# past HARD_EXIT_S the process exits at once. Whatever a flow had not committed by then is read
# again after the restart, and stored once: the sinks' keys make a second write change nothing.
SERVICES_STOP_S = 15.0
HARD_EXIT_S = 25.0
HARD_EXIT_CODE = 70  # EX_SOFTWARE


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
        # For a Faust consumer only: the Faust peers in `bench/` (the worker runs none).
        "consumer_auto_offset_reset": "earliest",
        "broker_commit_interval": 1.0,
        "autodiscover": False,
        # Dead letters carry the original bytes (up to 1 MiB) plus headers.
        "producer_max_request_size": DEAD_LETTER_REQUEST_BYTES,
        # SCRIBE_PRODUCER_LINGER_MS: 0 on Kafka, 5 on the embedded broker, where unbatched
        # sends cost the router's decide a quarter of its rate.
        "producer_linger": base.producer_linger_ms / 1000,
        "datadir": str(base.state_dir / "worker" / base.app_id),
    }
    credentials = base.security.kafka.faust_credentials()
    if credentials is not None:
        config["broker_credentials"] = credentials
    if base.fast_rebalance:
        # For a Faust consumer (the worker runs none, `FlowsOnly`; the Faust peer in `bench/`
        # does): the flows' consumers take the same timeouts from `runtime.kafka`.
        config.update(
            broker_rebalance_timeout=5,
            broker_session_timeout=6,
            broker_heartbeat_interval=1,
        )
    return config


# Faust's transactions covered only Faust's agents, and no flow is one any more.
NO_TRANSACTIONS_NEEDED = (
    "SCRIBE_PROCESSING_GUARANTEE=exactly_once has no effect: every flow is exact without Kafka "
    "transactions (its writes are keyed: README, 'One runtime under every flow'); unset it"
)


class FlowsOnly(BootStrategy):
    """Faust without its own consumer, conductor and tables: every flow reads with a consumer
    of its own (`runtime.service`), so Faust's group would hold nothing but its leader topic.
    It cost each worker start a group join before the flows could begin theirs (the embedded
    broker holds a first join for half the session timeout), and a fetch every 20 ms there
    for as long as the worker ran. What is left: the producer, the web server, timers."""

    enable_kafka_consumer = False


def create_app(settings: ResolvedSettings) -> tuple[faust.App, Resources]:
    from agents import register_all
    from scribe import observability

    if settings.base.processing_guarantee == "exactly_once":
        log.warning(NO_TRANSACTIONS_NEEDED)
    config = faust_settings(settings)
    Path(config["datadir"]).mkdir(parents=True, exist_ok=True)
    app = faust.App(settings.base.app_id, **config)
    app.boot_strategy = FlowsOnly(app)
    resources = Resources(app, settings)
    register_all(app, resources)
    observability.register(app, resources)

    return app, resources


async def prepare(settings: ResolvedSettings, report: Callable[[str], None]) -> None:
    """What a worker needs before it consumes: the catalog's topics, laid out as its flows
    need them, and the schema."""
    from sinks.postgres.migrate import migrate
    from topics.admin import check_co_partitioned, ensure_topics

    created = await ensure_topics(settings)
    if created:
        report(f"created topics: {', '.join(created)}")
    await check_co_partitioned(settings)
    await migrate(
        settings.database_url,
        report=report,
        connect_options=settings.database_options,
    )


class StoppingWorker(faust.Worker):
    """Faust's worker with an ordered, bounded stop. The sinks' retry loops are told first
    (`STOPPING`: a failed write is no longer retried); the flows (`Resources.flows`) stop all
    at once; then Faust's timers and producer stop; only then do the PostgreSQL pool, the
    Redis client and the flows' shared clients close, so no flow ever writes to a closed
    pool. Faust alone closed them before its services stopped, and a world flush then retried
    a closed pool forever.

    Its log lets repeats through once per window (`runtime.logs`): a server that is down
    makes every retry loop log the same failure several times a second."""

    def __init__(self, app: faust.App, resources: Resources, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.resources = resources
        self._stop_began: float | None = None
        self._flows_stopped: asyncio.Future[None] | None = None
        self._repeat_limiters: list[RepeatLimiter] = []
        # Faust sends this before it flushes and stops the producer the flows publish with.
        app.on_before_shutdown.connect(self._wait_for_flows)

    async def on_startup_finished(self) -> None:
        log.info("worker: running on the %s event loop", running_loop_name())
        await super().on_startup_finished()

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        log_format = self.resources.settings.base.log_format
        if log_format == "json":
            self.spinner = None  # it would write its progress between the JSON lines
        super().on_setup_root_logger(logger, level)
        if log_format == "json":
            # Faust's handler (and its own lines with it) takes our format; what is printed
            # from here on is redirected into the log by Faust (`worker_redirect_stdouts`).
            for handler in logger.handlers:
                handler.setFormatter(JsonFormatter())
        self._repeat_limiters = limit_repeats(logger.handlers)

    async def stop(self) -> None:
        if self._stop_began is not None:
            return  # asked again (the signal, then the loop's end): the first stop runs on
        self._stop_began = time.monotonic()
        STOPPING.set()
        _exit_at_deadline(HARD_EXIT_S)
        self._flows_stopped = asyncio.ensure_future(self._stop_flows())
        try:
            await asyncio.wait_for(super().stop(), SERVICES_STOP_S)
        except TimeoutError:
            log.error(
                "worker: flows not stopped within %.0f s (a server is unreachable?); closing "
                "the connections anyway: what was not committed is read again after a restart",
                SERVICES_STOP_S,
            )
        finally:
            await self.resources.close()
            log.info("worker: stopped in %.1f s", time.monotonic() - self._stop_began)
            # The spans still buffered are exported (within the exporter's timeout).
            tracing.shutdown()
            for limiter in self._repeat_limiters:
                limiter.flush()

    async def _stop_flows(self) -> None:
        """Each flow finishes (or abandons, uncommitted) the batch in hand and leaves its
        group; all at once, as each waits mostly on the broker."""
        flows = list(self.resources.flows)
        results = await asyncio.gather(*(flow.stop() for flow in flows), return_exceptions=True)
        for flow, result in zip(flows, results, strict=True):
            if isinstance(result, BaseException):
                log.error("worker: %s did not stop cleanly: %r", flow.label, result)

    async def _wait_for_flows(self, sender: Any, /, *args: Any, **kwargs: Any) -> None:
        if self._flows_stopped is not None:
            await asyncio.shield(self._flows_stopped)


def _exit_at_deadline(seconds: float) -> None:
    """The last resort of a bounded stop: a stop still running after `seconds` ends the
    process, whatever it waits for."""

    def exit_now() -> None:
        log.critical("worker: not stopped within %.0f s; exiting now", seconds)
        logging.shutdown()
        os._exit(HARD_EXIT_CODE)

    timer = threading.Timer(seconds, exit_now)
    timer.daemon = True
    timer.start()
