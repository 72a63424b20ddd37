"""`scribe worker` started after `scribe stack up`, with no service URL set: the CLI fills the
unset SCRIBE_* variables from the running stack, and the router finds the provider simulator
there (no flow looks for the stack itself)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from devkit.harness import Record, new_worker, read_until
from devkit.stack import LocalStack
from runtime.settings import kafka_bootstrap_servers
from schemas import decode
from schemas.events import AIRequest, AIResponse, ResponseStatus
from schemas.examples import example
from topics.catalog import AI_RESPONSES
from topics.publisher import Publisher

pytestmark = pytest.mark.integration

# Whatever could tell the worker where a service is, other than the running stack. The Kafka
# URL stays when the suite runs on Apache Kafka: then the stack brings the rest.
NOT_FROM_THE_STACK = (
    "SCRIBE_DATABASE_URL",
    "SCRIBE_REDIS_URL",
    "SCRIBE_PROVIDER_URL",
    "SCRIBE_CDN_URL",
    "SCRIBE_CDN_PROVIDERS",
    "SCRIBE_OPENROUTER_URL",
    "SCRIBE_GEMINI_URL",
    "OPENROUTER_API_KEYS",
    "GEMINI_API_KEYS",
)


async def test_worker_after_stack_up_answers_through_the_simulator(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in NOT_FROM_THE_STACK:
        monkeypatch.delenv(name, raising=False)
    root = state_dir / "cli-embedded-stack"
    with LocalStack(root).running() as stack_env:
        kafka_url = os.environ.get("SCRIBE_KAFKA_URL") or stack_env["SCRIBE_KAFKA_URL"]
        # The worker's state dir is the stack's: what `scribe stack up && scribe worker` share.
        worker = new_worker({}, root).start()
        try:
            request = example(AIRequest, priority="urgent", user_id="cli-stack-user")
            async with Publisher(kafka_bootstrap_servers(kafka_url)) as publisher:
                await publisher.publish(request)

            def answers(record: Record) -> bool:
                return (
                    record.value is not None
                    and decode(record.value, AIResponse).request_id == request.request_id
                )

            found = await read_until(kafka_url, AI_RESPONSES.name, bool, answers, timeout=120)
            assert found, f"no answer to {request.request_id}:\n{worker.log_tail()}"
            assert found[0].value is not None
            response = decode(found[0].value, AIResponse)
            assert response.status is ResponseStatus.OK, (response, worker.log_tail())
            assert "no provider configured" not in worker.log_path.read_text(errors="replace")
        finally:
            worker.stop()
