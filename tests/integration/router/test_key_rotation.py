"""With the simulator answering 429 for one key, traffic moves to the other keys, and that key
is used again only after its Retry-After (OpenRouter's header, Gemini's RetryInfo). Keys never
show up anywhere."""

from __future__ import annotations

import time

import httpx
import pytest

from agents.router.keys import key_id
from devkit.harness import read_until
from tests.integration.router.conftest import GEMINI_KEYS, OPENROUTER_KEYS, Router, Simulator

pytestmark = pytest.mark.integration

RETRY_AFTER_S = 2.0


@pytest.mark.parametrize(
    ("service", "kind", "secrets"),
    [("openrouter", "image", OPENROUTER_KEYS), ("gemini", "text", GEMINI_KEYS)],
)
async def test_a_rate_limited_key_rests_for_its_retry_after(
    router: Router, simulator: Simulator, service: str, kind: str, secrets: tuple[str, ...]
) -> None:
    limited = key_id(service, secrets[0])
    tag = router.tag()
    simulator.rules(
        {
            "action": "429",
            "provider": service,
            "key_id": limited,
            "prompt_contains": tag,
            "retry_after_s": RETRY_AFTER_S,
            "times": 1,
        }
    )
    answered = []
    started = time.monotonic()
    n = 0
    # One request at a time, until the rested key has served again (or 20 s).
    while time.monotonic() - started < 20:
        n += 1
        request = router.request(tag, kind=kind, priority="urgent", prompt=f"#{n} [tag:{tag}]")
        await router.publish(request)
        answered += await router.responses({request.request_id})
        calls = simulator.calls(tag)
        if [c for c in calls if c["key_id"] == limited and c["status"] == 200]:
            break
    assert all(a.status.value == "ok" and a.provider == service for a in answered)

    calls = simulator.calls(tag)
    by_limited = [c for c in calls if c["key_id"] == limited]
    refused, *later = by_limited
    assert refused["status"] == 429
    assert later, f"the rested key was not used again: {calls}"
    assert later[0]["started"] >= refused["finished"] + RETRY_AFTER_S - 0.05
    during = [
        c for c in calls if refused["finished"] < c["started"] < refused["finished"] + RETRY_AFTER_S
    ]
    assert during, "requests were served while the key rested"
    assert {c["key_id"] for c in during} <= {key_id(service, s) for s in secrets[1:]}
    assert all(c["status"] == 200 for c in during)


async def test_keys_never_appear_in_logs_metrics_or_messages(router: Router) -> None:
    """After the traffic of the other tests (429s, 500s, fallbacks): no key in the worker's
    log, its metrics, or any record of the topics the router writes."""
    secrets = [s.encode() for s in (*OPENROUTER_KEYS, *GEMINI_KEYS)]
    log = router.worker.log_path.read_bytes()
    async with httpx.AsyncClient() as client:
        metrics = (await client.get(f"{router.worker.url}/metrics", timeout=10)).content
    assert b"openrouter:" in metrics or b"gemini" in metrics
    for secret in secrets:
        assert secret not in log and secret not in metrics
    for topic in ("ai.responses", "usage.events", "ai.requests.dlq", "ai.router.settlements"):
        records = await read_until(router.kafka_url, topic, done=lambda kept: False, timeout=1.5)
        for record in records:
            blob = (record.value or b"") + b"".join(record.headers.values())
            assert not any(secret in blob for secret in secrets), topic
