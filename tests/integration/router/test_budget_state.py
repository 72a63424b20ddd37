"""The budget state the usage aggregator publishes (compacted topic keyed by user_id) reaches
the decide owner: a user out of budget is downgraded to a model that fits."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from runtime.settings import kafka_bootstrap_servers
from tests.integration.router.conftest import Router

pytestmark = pytest.mark.integration


async def test_a_spent_budget_downgrades_to_a_model_that_fits(router: Router) -> None:
    servers = kafka_bootstrap_servers(router.kafka_url)
    admin = AIOKafkaAdminClient(bootstrap_servers=servers)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic("budget.state", 4, 1, topic_configs={"cleanup.policy": "compact"})]
        )
    except TopicAlreadyExistsError:
        pass
    finally:
        await admin.close()
    tag = router.tag()
    user = f"broke-{tag}"
    state = {"user_id": user, "month": time.strftime("%Y-%m"), "budget_usd": "1", "spent_usd": 1}
    producer = AIOKafkaProducer(bootstrap_servers=servers)
    await producer.start()
    try:
        await producer.send_and_wait("budget.state", orjson.dumps(state), key=user.encode())
    finally:
        await producer.stop()

    # The reader looks for the topic every few seconds; ask until the budget is known.
    deadline = time.monotonic() + 45
    while True:
        request = router.request(tag, user_id=user, kind="text", priority="urgent")
        await router.publish(request)
        [answer] = await router.responses({request.request_id})
        assert answer.status.value == "ok"
        if answer.rationale and "downgraded" in answer.rationale:
            break
        assert time.monotonic() < deadline, f"budget never applied: {answer.rationale}"
        await asyncio.sleep(1)
    assert answer.free_tier is True and answer.cost_usd == 0
    assert "budget left 0 USD" in (answer.rationale or "")
