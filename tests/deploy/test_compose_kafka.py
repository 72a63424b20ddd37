"""docker-compose.kafka.yml checked without a Docker engine: every service, port, volume and
environment variable against the settings, the Kafka cluster's own wiring, Prometheus and the
provisioned Grafana dashboard."""

from __future__ import annotations

import base64
import json
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

import runtime.settings
import scribe.gateway.config
from runtime.settings import Settings, kafka_bootstrap_servers
from scribe.gateway.config import GatewaySettings
from topics.admin import min_insync_replicas

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.kafka.yml"
KAFKA_SERVICES = ("kafka-1", "kafka-2", "kafka-3")
SERVICES = {*KAFKA_SERVICES, "postgres", "redis", "worker", "gateway", "prometheus", "grafana"}
PIPELINE = ("worker", "gateway")  # run the pipeline's own image, configured by SCRIBE_* settings
# A value each required variable could have, in the form its reader expects.
EXPORTED = {"SCRIBE_GATEWAY_TOKENS": "game:a-token-of-sixteen-chars:usage.events|world.events"}
STATEFUL = {*KAFKA_SERVICES, "postgres", "redis", "prometheus", "grafana"}
SAMPLE_SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
}
INTERPOLATION = re.compile(r"\$\{(\w+)(?::?[?-][^}]*)?\}")


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def _substitute(value: str) -> str:
    """What `docker compose` would pass once the required variables are exported."""
    return INTERPOLATION.sub(
        lambda m: EXPORTED.get(m.group(1), f"value-of-{m.group(1).lower()}"), value
    )


def _env(service: str) -> dict[str, str]:
    environment = _compose()["services"][service].get("environment", {})
    return {key: _substitute(str(value)) for key, value in environment.items()}


def _setting_names() -> set[str]:
    """Every SCRIBE_* variable the pipeline's and the gateway's settings read."""
    sources = (runtime.settings.__file__, scribe.gateway.config.__file__)
    return {
        name for f in sources for name in re.findall(r'"(SCRIBE_[A-Z_]+)"', Path(f).read_text())
    }


def _use_env(service: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("SCRIBE_")]:
        monkeypatch.delenv(name)
    for name, value in _env(service).items():
        monkeypatch.setenv(name, value)


def _worker_settings(monkeypatch: pytest.MonkeyPatch, service: str = "worker") -> Settings:
    _use_env(service, monkeypatch)
    return Settings.from_env()


def test_every_service_is_there_with_a_healthcheck() -> None:
    services = _compose()["services"]
    assert set(services) == SERVICES
    for name, service in services.items():
        assert "healthcheck" in service, f"{name} has no healthcheck"
        assert service["healthcheck"]["test"], name


def test_state_lives_in_named_volumes_that_are_declared() -> None:
    compose = _compose()
    declared = set(compose["volumes"])
    used = set()
    for name, service in compose["services"].items():
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if not source.startswith(("./", "/")):
                used.add(source)
                assert source in declared, f"{name} mounts undeclared volume {source}"
            else:
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
        if name in STATEFUL:
            assert any(not m.startswith(("./", "/")) for m in service["volumes"]), name
    assert used == declared


def test_no_secret_is_committed() -> None:
    for name, service in _compose()["services"].items():
        for key, value in service.get("environment", {}).items():
            if any(word in key for word in ("PASSWORD", "SECRET", "TOKEN")):
                assert INTERPOLATION.fullmatch(str(value)), f"{name}: {key} is committed"
    worker_db = _compose()["services"]["worker"]["environment"]["SCRIBE_DATABASE_URL"]
    assert "${POSTGRES_PASSWORD" in worker_db


def test_published_ports_bind_to_loopback_only() -> None:
    for name, service in _compose()["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"


@pytest.mark.parametrize("service", PIPELINE)
def test_pipeline_environment_is_made_of_real_settings_with_usable_values(
    service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = _env(service)
    unknown = set(env) - _setting_names()
    assert not unknown, f"{service}: not settings the pipeline reads: {unknown}"
    _worker_settings(monkeypatch, service).require()  # raises on any unusable value


def test_worker_serves_metrics_beyond_its_container(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _worker_settings(monkeypatch)
    assert settings.web_host == "0.0.0.0"  # reachable by Prometheus from its container
    assert settings.processing_guarantee in runtime.settings.PROCESSING_GUARANTEES


def test_gateway_serves_its_clients_and_prometheus(monkeypatch: pytest.MonkeyPatch) -> None:
    _use_env("gateway", monkeypatch)
    config = GatewaySettings.from_env()
    assert config.host == "0.0.0.0"
    assert config.tokens.clients, "the gateway would refuse to start without a client token"
    gateway = _compose()["services"]["gateway"]
    assert gateway["command"] == ["scribe", "gateway"]
    assert gateway["ports"] == [f"127.0.0.1:{config.port}:{config.port}"]
    assert f":{config.port}/health" in " ".join(gateway["healthcheck"]["test"])
    assert gateway["image"] == _compose()["services"]["worker"]["image"]
    prometheus = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    assert jobs["scribe-gateway"]["static_configs"] == [{"targets": [f"gateway:{config.port}"]}]


@pytest.mark.parametrize("service", PIPELINE)
def test_pipeline_reaches_every_broker_postgres_and_redis_where_they_listen(
    service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _worker_settings(monkeypatch, service).require()
    broker_port = _kafka_listener_port("PLAINTEXT")
    assert kafka_bootstrap_servers(settings.kafka_url) == [
        f"{name}:{broker_port}" for name in KAFKA_SERVICES
    ]
    database = urlsplit(settings.database_url)
    postgres = _env("postgres")
    assert (database.hostname, database.port) == ("postgres", 5432)
    assert database.username == postgres["POSTGRES_USER"]
    assert database.password == postgres["POSTGRES_PASSWORD"]
    assert database.path == f"/{postgres['POSTGRES_DB']}"
    redis = urlsplit(settings.redis_url)
    assert (redis.hostname, redis.port) == ("redis", 6379)


def test_worker_scales_and_prometheus_scrapes_every_replica(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    worker = _compose()["services"]["worker"]
    settings = _worker_settings(monkeypatch)
    assert "container_name" not in worker and "ports" not in worker, "would block --scale"
    assert worker["expose"] == [str(settings.web_port)]
    assert f":{settings.web_port}/health" in " ".join(worker["healthcheck"]["test"])
    for dependency in (*KAFKA_SERVICES, "postgres", "redis"):
        assert worker["depends_on"][dependency]["condition"] == "service_healthy"
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"EXPOSE {settings.web_port}" in dockerfile
    assert 'CMD ["scribe", "worker"]' in dockerfile

    prometheus = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    job = {job["job_name"]: job for job in prometheus["scrape_configs"]}["scribe-worker"]
    assert job["metrics_path"] == "/metrics"
    (discovery,) = job["dns_sd_configs"]
    assert discovery == {**discovery, "names": ["worker"], "type": "A", "port": settings.web_port}


def test_kafka_is_a_three_node_kraft_quorum_with_the_pipelines_durability(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    envs = {name: _env(name) for name in KAFKA_SERVICES}
    ids = {name: env["KAFKA_NODE_ID"] for name, env in envs.items()}
    assert sorted(ids.values()) == ["1", "2", "3"]
    controller_port = _kafka_listener_port("CONTROLLER")
    voters = {f"{ids[name]}@{name}:{controller_port}" for name in KAFKA_SERVICES}
    broker_port = _kafka_listener_port("PLAINTEXT")
    for name, env in envs.items():
        assert set(env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")) == voters
        assert env["KAFKA_ADVERTISED_LISTENERS"] == f"PLAINTEXT://{name}:{broker_port}"
        assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
        assert len(base64.urlsafe_b64decode(env["CLUSTER_ID"] + "==")) == 16
    replication = _worker_settings(monkeypatch).topic_replication
    assert _worker_settings(monkeypatch, "gateway").topic_replication == replication
    any_broker = envs["kafka-1"]
    assert replication == len(KAFKA_SERVICES)
    assert int(any_broker["KAFKA_DEFAULT_REPLICATION_FACTOR"]) == replication
    assert int(any_broker["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"]) == replication
    assert int(any_broker["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"]) == replication
    min_insync = min_insync_replicas(replication)
    assert int(any_broker["KAFKA_MIN_INSYNC_REPLICAS"]) == min_insync
    assert int(any_broker["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"]) == min_insync


def test_prometheus_loads_the_alert_rules_it_is_given() -> None:
    prometheus = _compose()["services"]["prometheus"]
    mounted = {
        target: source for source, target in (m.split(":")[:2] for m in prometheus["volumes"])
    }
    config = yaml.safe_load((ROOT / mounted["/etc/prometheus/prometheus.yml"]).read_text())
    for rule_file in config["rule_files"]:
        assert (ROOT / mounted[rule_file]).exists(), rule_file


def test_grafana_provisions_prometheus_and_the_pipeline_dashboard() -> None:
    grafana = _compose()["services"]["grafana"]
    mounts = [m.split(":")[:2] for m in grafana["volumes"]]
    sources = {target: ROOT / source for source, target in mounts if source.startswith("./")}
    provisioning = sources["/etc/grafana/provisioning"]
    (datasource,) = yaml.safe_load((provisioning / "datasources/prometheus.yml").read_text())[
        "datasources"
    ]
    assert (datasource["type"], datasource["url"]) == ("prometheus", "http://prometheus:9090")
    (provider,) = yaml.safe_load((provisioning / "dashboards/scribe.yml").read_text())["providers"]
    dashboards = sources[provider["options"]["path"]]
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(provider["options"]["path"] + "/")
    dashboard = json.loads((dashboards / Path(home).name).read_text())
    # The panels query whichever Prometheus data source the `datasource` variable picks.
    (variable,) = [v for v in dashboard["templating"]["list"] if v["name"] == "datasource"]
    assert (variable["type"], variable["query"]) == ("datasource", datasource["type"])
    queries = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert any("scribe_partition_assignment_size" in q for q in queries), "no spread panel"


def _kafka_listener_port(listener: str) -> int:
    listeners = _env("kafka-1")["KAFKA_LISTENERS"].split(",")
    (address,) = [a for a in listeners if a.startswith(f"{listener}://")]
    return int(address.rsplit(":", 1)[1])
