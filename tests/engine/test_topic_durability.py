"""The pipeline's topics as Apache Kafka created them: the replication factor the settings ask
for and, with three copies, two that must acknowledge every `acks=all` write."""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from devkit.harness import WorkerProcess
from runtime.settings import Settings, kafka_bootstrap_servers
from topics.admin import min_insync_replicas
from topics.catalog import DEAD_LETTER_TOPICS, TOPICS

pytestmark = pytest.mark.engine

NAMES = [t.name for t in TOPICS] + [t.name for t in DEAD_LETTER_TOPICS]


async def test_pipeline_topics_have_the_replication_and_min_insync_the_settings_ask_for(
    kafka_url: str, worker: WorkerProcess
) -> None:
    settings = Settings.from_env()
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap_servers(kafka_url))
    await admin.start()
    try:
        described = await admin.describe_topics(NAMES)
        configs = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name) for name in NAMES]
        )
    finally:
        await admin.close()

    replicas = {t["topic"]: {len(p["replicas"]) for p in t["partitions"]} for t in described}
    assert replicas == {name: {settings.topic_replication} for name in NAMES}
    expected = str(min_insync_replicas(settings.topic_replication) or 1)
    assert _config_values(configs, "min.insync.replicas") == dict.fromkeys(NAMES, expected)


def _config_values(responses: list[Any], key: str) -> dict[str, str]:
    values = {}
    for response in responses:
        for resource in response.to_object()["resources"]:
            for entry in resource["config_entries"]:
                if entry["config_names"] == key:
                    values[resource["resource_name"]] = entry["config_value"]
    return values
