"""Settings read from the environment.

Every setting is a `SCRIBE_*` variable. A service URL that is not set means "use the embedded
stack": on a developer install the CLI fills the unset variables from what `scribe stack up`
recorded under SCRIBE_STATE_DIR (`scribe/cli/settings.py`) before it reads these settings.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from runtime.event_loop import EVENT_LOOPS
from runtime.logs import LOG_FORMATS
from runtime.security import Security, SecuritySettingsError, mask_url


class SettingsError(ValueError):
    """A setting has a value the pipeline cannot use; the message names the variable."""


def kafka_bootstrap_servers(url: str) -> list[str]:
    """Turn `kafka://h1:p1,h2:p2`, `h:p` or `h1:p1,h2:p2` into aiokafka's `host:port` list."""
    raw = url.strip()
    for scheme in ("kafka://", "tcp://", "plaintext://"):
        if raw.lower().startswith(scheme):
            raw = raw[len(scheme) :]
            break
    if "://" in raw:
        raise SettingsError(
            f"SCRIBE_KAFKA_URL: unsupported scheme in {url!r}; use kafka://host:port"
        )
    servers = []
    for part in raw.rstrip("/").split(","):
        host, sep, port = part.strip().rpartition(":")
        if not sep or not host or not port.isdigit():
            raise SettingsError(
                f"SCRIBE_KAFKA_URL: {part.strip()!r} is not host:port (from {url!r})"
            )
        servers.append(f"{host}:{int(port)}")
    return servers


def faust_broker_url(url: str) -> str:
    """Faust's broker form: `kafka://h1:p1;h2:p2`."""
    return "kafka://" + ";".join(kafka_bootstrap_servers(url))


def _check_url(name: str, url: str, schemes: tuple[str, ...]) -> str:
    scheme = urlsplit(url).scheme
    if scheme not in schemes:
        allowed = ", ".join(f"{s}://" for s in schemes)
        raise SettingsError(f"{name}: {mask_url(url)!r} must start with one of {allowed}")
    return url


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise SettingsError(f"{name}: {raw!r} is not a whole number") from None


DEFAULT_STATEMENT_CACHE_SIZE = 100


def _statement_cache_size() -> int:
    name = "SCRIBE_DATABASE_STATEMENT_CACHE_SIZE"
    size = _int(name, DEFAULT_STATEMENT_CACHE_SIZE)
    if size < 0:
        raise SettingsError(f"{name}: {size} must be 0 (no cache, for PgBouncer) or more")
    return size


# `exactly_once` needs Kafka transactions: Apache Kafka has them, the embedded Tansu does not.
PROCESSING_GUARANTEES = ("at_least_once", "exactly_once")
# The flows a worker can host (`SCRIBE_WORKER_FLOWS`); every worker hosts all of them unless told.
WORKER_FLOWS = ("router", "usage", "world", "invalidation")
# The router's two halves, for workers that host one: decide and settle (each user's quota and
# budget state in Redis), and the lanes that call the providers. `router` is both.
ROUTER_PARTS = ("router-decide", "router-lanes")


def _thresholds(name: str, default: tuple[int, ...]) -> tuple[int, ...]:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        values = sorted({int(part) for part in raw.split(",") if part.strip()})
    except ValueError:
        raise SettingsError(f"{name}: {raw!r} is not a comma-separated list of percents") from None
    if not values or not all(1 <= v <= 1000 for v in values):
        raise SettingsError(f"{name}: {raw!r}: each percent must be between 1 and 1000")
    return tuple(values)


def _hours(name: str, default: tuple[int, int]) -> tuple[int, int]:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    start, sep, end = raw.partition("-")
    if not (sep and start.strip().isdigit() and end.strip().isdigit()):
        raise SettingsError(f"{name}: {raw!r} is not a UTC hour range such as 16-22")
    hours = int(start), int(end)
    if not (0 <= hours[0] < hours[1] <= 24):
        raise SettingsError(f"{name}: {raw!r}: need 0 <= start < end <= 24")
    return hours


@dataclass(frozen=True)
class UsageSettings:
    """Usage aggregation, budgets and cost reports."""

    alert_thresholds_pct: tuple[int, ...] = (50, 80, 100)
    max_tokens_per_event: int = 2_000_000
    # 0 keeps every month of the ledger; N detaches partitions older than N months.
    retention_months: int = 0
    # Peak hours [start, end) in UTC, for the off-peak recommendation.
    peak_hours_utc: tuple[int, int] = (16, 22)
    # Free-model requests the platform may make per day (OpenRouter's limit with credits).
    free_tier_daily_requests: int = 1000

    @classmethod
    def from_env(cls) -> UsageSettings:
        return cls(
            alert_thresholds_pct=_thresholds("SCRIBE_BUDGET_ALERT_THRESHOLDS", (50, 80, 100)),
            max_tokens_per_event=_int("SCRIBE_USAGE_MAX_TOKENS", 2_000_000),
            retention_months=_int("SCRIBE_USAGE_RETENTION_MONTHS", 0),
            peak_hours_utc=_hours("SCRIBE_PEAK_HOURS_UTC", (16, 22)),
            free_tier_daily_requests=_int("SCRIBE_FREE_TIER_DAILY_REQUESTS", 1000),
        )


def env_number(
    name: str,
    default: float,
    minimum: float | None = None,
    maximum: float | None = None,
) -> float:
    """A numeric `SCRIBE_*` variable within [minimum, maximum], or a SettingsError naming it."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}: {raw!r} is not a number") from None
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise SettingsError(f"{name}: {raw} is outside [{minimum}, {maximum}]")
    return value


def _choice(name: str, choices: tuple[str, ...], default: str) -> str:
    raw = os.environ.get(name) or default
    if raw not in choices:
        raise SettingsError(f"{name}: {raw!r} is not one of {', '.join(choices)}")
    return raw


def _choices(
    name: str, choices: tuple[str, ...], default: tuple[str, ...] | None = None
) -> tuple[str, ...]:
    """A comma-separated subset of `choices` (unset or empty: `default`, else all of them), in
    their order."""
    named = {part.strip() for part in (os.environ.get(name) or "").split(",") if part.strip()}
    unknown = sorted(named.difference(choices))
    if unknown:
        raise SettingsError(
            f"{name}: {', '.join(map(repr, unknown))} not among {', '.join(choices)}"
        )
    if not named:
        return choices if default is None else default
    return tuple(c for c in choices if c in named)


def _float(name: str, default: float, positive: bool = False) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}: {raw!r} is not a number") from None
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        bound = "> 0" if positive else ">= 0"
        raise SettingsError(f"{name}: {raw!r} must be a finite number {bound}")
    return value


@dataclass(frozen=True)
class Settings:
    """The pipeline's configuration; `from_env()` is the only constructor production uses."""

    kafka_url: str | None = None
    database_url: str | None = None
    redis_url: str | None = None
    # The CDN purge API (the local simulator under `scribe stack up`); None: no CDN.
    cdn_url: str | None = None
    cdn_providers: str | None = None  # fastly, cloudflare or both (see sinks/cdn/config.py)
    web_port: int = 6066
    web_host: str = "127.0.0.1"
    state_dir: Path = field(default_factory=lambda: Path(".scribe"))
    app_id: str = "scribe"
    topic_partitions: int = 4
    topic_replication: int = 1
    fast_rebalance: bool = False
    usage: UsageSettings = field(default_factory=UsageSettings)
    producer_idempotence: str = "auto"
    # How long a producer waits to fill a batch. 0 on Kafka: what is sent while a request is in
    # flight goes in the next one anyway, and waiting only added latency (`bench/router.py`).
    producer_linger_ms: int = 0
    processing_guarantee: str = "at_least_once"
    # The flows this worker hosts; the others run in other workers of the same app_id (a
    # router-only worker keeps the batch flows' CPU off the AI calls' latency).
    worker_flows: tuple[str, ...] = WORKER_FLOWS
    security: Security = field(default_factory=Security)
    # World simulation: seconds between ticks of an active world (0: no timer, ticks come
    # only from `world.ticks`), seconds without player activity before a world goes idle,
    # and the most ticks one world catches up per scheduling round.
    world_tick_seconds: float = 1.0
    world_idle_seconds: float = 300.0
    world_catch_up_ticks: int = 20
    # How often a world's full state is written to world_state (0: with every batch); between
    # checkpoints world_state.state lags the world's log by up to twice this.
    world_checkpoint_seconds: float = 10.0
    # How the worker and the gateway write their log: `text`, or `json` (one object per line).
    log_format: str = "text"
    # The event loop the worker and the gateway run on (runtime/event_loop.py).
    event_loop: str = "uvloop"
    # asyncpg's per-connection cache of named prepared statements (asyncpg's default, 100).
    # 0 behind a pooler in transaction mode (PgBouncer), where the next statement may run on
    # another server connection that never saw the prepared one.
    database_statement_cache_size: int = DEFAULT_STATEMENT_CACHE_SIZE
    # A streaming replica for the reads that may be a little behind (reports, dashboards, world
    # inspection, cache warming); None: every read goes to the primary.
    database_read_url: str | None = None
    # Replica lag above which those reads go to the primary instead, and how often it is measured.
    database_read_max_lag_s: float = 5.0
    database_read_check_s: float = 1.0

    def fetch_wait_ms(self, on_embedded_ms: int, on_kafka_ms: int = 500) -> int:
        """How long a consumer's fetch may wait for records. The embedded broker (run with
        `fast_rebalance`) answers a waiting fetch only when its wait runs out, so a flow that
        must answer soon waits briefly there, and each of its idle consumers fetches that
        often. Kafka answers as soon as records arrive, so there a long wait costs no latency
        and spares the idle fetches."""
        return on_embedded_ms if self.fast_rebalance else on_kafka_ms

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ
        kafka = env.get("SCRIBE_KAFKA_URL") or None
        if kafka:
            kafka_bootstrap_servers(kafka)
        database = env.get("SCRIBE_DATABASE_URL") or None
        if database:
            _check_url("SCRIBE_DATABASE_URL", database, ("postgresql", "postgres"))
        database_read = env.get("SCRIBE_DATABASE_READ_URL") or None
        if database_read:
            _check_url("SCRIBE_DATABASE_READ_URL", database_read, ("postgresql", "postgres"))
        redis = env.get("SCRIBE_REDIS_URL") or None
        if redis:
            _check_url("SCRIBE_REDIS_URL", redis, ("redis", "rediss", "unix"))
        cdn = env.get("SCRIBE_CDN_URL") or None
        if cdn:
            _check_url("SCRIBE_CDN_URL", cdn, ("http", "https"))
        try:
            security = Security.from_env(env)
        except SecuritySettingsError as exc:
            raise SettingsError(str(exc)) from None
        return cls(
            kafka_url=kafka,
            database_url=database,
            redis_url=redis,
            cdn_url=cdn,
            cdn_providers=env.get("SCRIBE_CDN_PROVIDERS") or None,
            web_port=_int("SCRIBE_WEB_PORT", 6066),
            web_host=env.get("SCRIBE_WEB_HOST", "127.0.0.1"),
            state_dir=Path(env.get("SCRIBE_STATE_DIR", ".scribe")),
            app_id=env.get("SCRIBE_APP_ID", "scribe"),
            topic_partitions=_int("SCRIBE_TOPIC_PARTITIONS", 4),
            topic_replication=_int("SCRIBE_TOPIC_REPLICATION", 1),
            fast_rebalance=env.get("SCRIBE_FAST_REBALANCE", "") == "1",
            usage=UsageSettings.from_env(),
            producer_idempotence=_choice(
                "SCRIBE_PRODUCER_IDEMPOTENCE", ("auto", "on", "off"), "auto"
            ),
            producer_linger_ms=_int("SCRIBE_PRODUCER_LINGER_MS", 0),
            processing_guarantee=_choice(
                "SCRIBE_PROCESSING_GUARANTEE", PROCESSING_GUARANTEES, "at_least_once"
            ),
            worker_flows=_choices("SCRIBE_WORKER_FLOWS", WORKER_FLOWS + ROUTER_PARTS, WORKER_FLOWS),
            security=security,
            world_tick_seconds=_float("SCRIBE_WORLD_TICK_SECONDS", 1.0),
            world_idle_seconds=_float("SCRIBE_WORLD_IDLE_SECONDS", 300.0, positive=True),
            world_catch_up_ticks=max(1, _int("SCRIBE_WORLD_CATCH_UP_TICKS", 20)),
            world_checkpoint_seconds=_float("SCRIBE_WORLD_CHECKPOINT_SECONDS", 10.0),
            log_format=_choice("SCRIBE_LOG_FORMAT", LOG_FORMATS, "text"),
            event_loop=_choice("SCRIBE_EVENT_LOOP", EVENT_LOOPS, "uvloop"),
            database_statement_cache_size=_statement_cache_size(),
            database_read_url=database_read,
            database_read_max_lag_s=_float("SCRIBE_DATABASE_READ_MAX_LAG_S", 5.0),
            database_read_check_s=_float("SCRIBE_DATABASE_READ_CHECK_S", 1.0, positive=True),
        )

    def require(self) -> ResolvedSettings:
        """The settings with every service URL known, or an error that says how to get one."""
        missing = [
            name
            for name, value in (
                ("SCRIBE_KAFKA_URL", self.kafka_url),
                ("SCRIBE_DATABASE_URL", self.database_url),
                ("SCRIBE_REDIS_URL", self.redis_url),
            )
            if not value
        ]
        if missing:
            raise SettingsError(
                f"{', '.join(missing)} not set and no embedded stack is running; "
                "run `scribe stack up` or set the URLs"
            )
        assert self.kafka_url and self.database_url and self.redis_url
        return ResolvedSettings(self, self.kafka_url, self.database_url, self.redis_url)


@dataclass(frozen=True)
class ResolvedSettings:
    """Settings whose three service URLs are known."""

    base: Settings
    kafka_url: str
    database_url: str
    redis_url: str

    @classmethod
    def kafka_only(cls, bootstrap_servers: list[str]) -> ResolvedSettings:
        """Default settings that name only a PLAINTEXT Kafka at `bootstrap_servers` (no
        database, no Redis): for tests and tools that are given nothing but broker addresses."""
        url = "kafka://" + ",".join(bootstrap_servers)
        return cls(Settings(kafka_url=url), url, database_url="", redis_url="")

    @property
    def bootstrap_servers(self) -> list[str]:
        return kafka_bootstrap_servers(self.kafka_url)

    @property
    def kafka_client_options(self) -> dict[str, Any]:
        """Security options for every aiokafka client (producer, consumer, admin)."""
        return self.base.security.kafka.aiokafka_kwargs()

    @property
    def database_options(self) -> dict[str, Any]:
        """Every asyncpg.connect / create_pool takes these: password, TLS and the statement
        cache size (0 behind PgBouncer in transaction mode)."""
        return {
            **self.base.security.postgres.asyncpg_kwargs(),
            "statement_cache_size": self.base.database_statement_cache_size,
        }

    @property
    def secrets(self) -> list[str]:
        """Every secret value configured, URL passwords included: for the log redactor."""
        return self.base.security.secrets(
            [self.kafka_url, self.database_url, self.redis_url, self.base.database_read_url]
        )
