from __future__ import annotations

import pytest

from runtime.settings import Settings, SettingsError, faust_broker_url, kafka_bootstrap_servers


@pytest.mark.parametrize(
    ("url", "servers"),
    [
        ("kafka://127.0.0.1:9092", ["127.0.0.1:9092"]),
        ("127.0.0.1:9092", ["127.0.0.1:9092"]),
        ("kafka://a:1,b:2", ["a:1", "b:2"]),
        ("a:1, b:2", ["a:1", "b:2"]),
        ("kafka://broker-1.internal:9093/", ["broker-1.internal:9093"]),
    ],
)
def test_kafka_url_forms(url: str, servers: list[str]) -> None:
    assert kafka_bootstrap_servers(url) == servers


@pytest.mark.parametrize("url", ["http://a:1", "kafka://a", "a:port", ""])
def test_bad_kafka_urls_say_what_is_wrong(url: str) -> None:
    with pytest.raises(SettingsError, match="SCRIBE_KAFKA_URL"):
        kafka_bootstrap_servers(url)


def test_faust_broker_url_joins_with_semicolons() -> None:
    assert faust_broker_url("a:1,b:2") == "kafka://a:1;b:2"


def test_from_env_reads_and_checks_every_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCRIBE_KAFKA_URL", "kafka://k:9092")
    monkeypatch.setenv("SCRIBE_DATABASE_URL", "postgresql://u@db:5432/scribe")
    monkeypatch.setenv("SCRIBE_REDIS_URL", "unix:///run/redis.sock")
    monkeypatch.setenv("SCRIBE_WEB_PORT", "7000")
    settings = Settings.from_env()
    assert settings.web_port == 7000
    assert settings.require().bootstrap_servers == ["k:9092"]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SCRIBE_DATABASE_URL", "mysql://x"),
        ("SCRIBE_REDIS_URL", "http://x"),
        ("SCRIBE_WEB_PORT", "eighty"),
        ("SCRIBE_DATABASE_STATEMENT_CACHE_SIZE", "-1"),
        ("SCRIBE_DATABASE_STATEMENT_CACHE_SIZE", "none"),
    ],
)
def test_from_env_refuses_bad_values(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=name):
        Settings.from_env()


def test_the_statement_cache_size_reaches_every_asyncpg_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SCRIBE_KAFKA_URL", "kafka://k:9092")
    monkeypatch.setenv("SCRIBE_DATABASE_URL", "postgresql://u@pgbouncer:6432/scribe")
    monkeypatch.setenv("SCRIBE_REDIS_URL", "redis://r:6379")
    monkeypatch.setenv("SCRIBE_DATABASE_SSLMODE", "require")
    assert Settings.from_env().require().database_options == {
        "ssl": "require",
        "statement_cache_size": 100,
    }
    monkeypatch.setenv("SCRIBE_DATABASE_STATEMENT_CACHE_SIZE", "0")
    options = Settings.from_env().require().database_options
    assert options == {"ssl": "require", "statement_cache_size": 0}


def test_require_names_the_missing_urls() -> None:
    with pytest.raises(SettingsError, match="SCRIBE_REDIS_URL not set"):
        Settings(kafka_url="k:1", database_url="postgresql://x").require()


def test_producer_settings_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SCRIBE_PRODUCER_IDEMPOTENCE", raising=False)
    assert Settings.from_env().producer_idempotence == "auto"
    monkeypatch.setenv("SCRIBE_PRODUCER_IDEMPOTENCE", "off")
    monkeypatch.setenv("SCRIBE_PRODUCER_LINGER_MS", "20")
    settings = Settings.from_env()
    assert (settings.producer_idempotence, settings.producer_linger_ms) == ("off", 20)
    monkeypatch.setenv("SCRIBE_PRODUCER_IDEMPOTENCE", "maybe")
    with pytest.raises(SettingsError, match="SCRIBE_PRODUCER_IDEMPOTENCE: 'maybe'"):
        Settings.from_env()


def test_a_worker_hosts_every_flow_unless_told(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SCRIBE_WORKER_FLOWS", raising=False)
    assert Settings.from_env().worker_flows == ("router", "usage", "world", "invalidation")
    monkeypatch.setenv("SCRIBE_WORKER_FLOWS", " invalidation,router ")
    assert Settings.from_env().worker_flows == ("router", "invalidation")
    monkeypatch.setenv("SCRIBE_WORKER_FLOWS", "router-lanes,usage")
    assert Settings.from_env().worker_flows == ("usage", "router-lanes")


def test_an_unknown_flow_is_named_in_the_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCRIBE_WORKER_FLOWS", "router,routr")
    with pytest.raises(SettingsError, match="SCRIBE_WORKER_FLOWS: 'routr' not among router"):
        Settings.from_env()
