"""Settings read from the environment.

Every setting is a `SCRIBE_*` variable. A service URL that is not set means "use the embedded
stack": the CLI then reads the URLs that `scribe stack up` recorded under `.scribe/`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit


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
        raise SettingsError(f"{name}: {url!r} must start with one of {allowed}")
    return url


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise SettingsError(f"{name}: {raw!r} is not a whole number") from None


def _choice(name: str, choices: tuple[str, ...], default: str) -> str:
    raw = os.environ.get(name) or default
    if raw not in choices:
        raise SettingsError(f"{name}: {raw!r} is not one of {', '.join(choices)}")
    return raw


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
    web_port: int = 6066
    web_host: str = "127.0.0.1"
    state_dir: Path = field(default_factory=lambda: Path(".scribe"))
    app_id: str = "scribe"
    topic_partitions: int = 4
    topic_replication: int = 1
    fast_rebalance: bool = False
    producer_idempotence: str = "auto"
    producer_linger_ms: int = 5
    # World simulation: seconds between ticks of an active world (0: no timer, ticks come
    # only from `world.ticks`), seconds without player activity before a world goes idle,
    # and the most ticks one world catches up per scheduling round.
    world_tick_seconds: float = 1.0
    world_idle_seconds: float = 300.0
    world_catch_up_ticks: int = 20

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ
        kafka = env.get("SCRIBE_KAFKA_URL") or None
        if kafka:
            kafka_bootstrap_servers(kafka)
        database = env.get("SCRIBE_DATABASE_URL") or None
        if database:
            _check_url("SCRIBE_DATABASE_URL", database, ("postgresql", "postgres"))
        redis = env.get("SCRIBE_REDIS_URL") or None
        if redis:
            _check_url("SCRIBE_REDIS_URL", redis, ("redis", "rediss", "unix"))
        return cls(
            kafka_url=kafka,
            database_url=database,
            redis_url=redis,
            web_port=_int("SCRIBE_WEB_PORT", 6066),
            web_host=env.get("SCRIBE_WEB_HOST", "127.0.0.1"),
            state_dir=Path(env.get("SCRIBE_STATE_DIR", ".scribe")),
            app_id=env.get("SCRIBE_APP_ID", "scribe"),
            topic_partitions=_int("SCRIBE_TOPIC_PARTITIONS", 4),
            topic_replication=_int("SCRIBE_TOPIC_REPLICATION", 1),
            fast_rebalance=env.get("SCRIBE_FAST_REBALANCE", "") == "1",
            producer_idempotence=_choice(
                "SCRIBE_PRODUCER_IDEMPOTENCE", ("auto", "on", "off"), "auto"
            ),
            producer_linger_ms=_int("SCRIBE_PRODUCER_LINGER_MS", 5),
            world_tick_seconds=_float("SCRIBE_WORLD_TICK_SECONDS", 1.0),
            world_idle_seconds=_float("SCRIBE_WORLD_IDLE_SECONDS", 300.0, positive=True),
            world_catch_up_ticks=max(1, _int("SCRIBE_WORLD_CATCH_UP_TICKS", 20)),
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

    @property
    def bootstrap_servers(self) -> list[str]:
        return kafka_bootstrap_servers(self.kafka_url)
