"""The same request_id published twice gives one provider call; both publishes are answered,
the second with the first's response; one usage event."""

from __future__ import annotations

import pytest

from devkit.harness import read_until
from tests.integration.router.conftest import Router, Simulator

pytestmark = pytest.mark.integration


async def test_same_request_id_twice_gives_one_provider_call(
    router: Router, simulator: Simulator
) -> None:
    tag = router.tag()
    request = router.request(tag, kind="text", priority="urgent")
    await router.publish(request, request)
    answers = await router.responses({request.request_id}, count=2)
    assert len(answers) == 2, router.worker.log_tail()
    assert answers[0] == answers[1], "the duplicate gets the first response again"
    assert answers[0].status.value == "ok"

    await router.publish(request)  # well after the answer: replayed, not executed
    answers = await router.responses({request.request_id}, count=3)
    assert len(answers) == 3 and answers[2] == answers[0]

    # Decide answered the duplicates itself; had it routed one, it would be on the lane by now.
    routed = await read_until(
        router.kafka_url,
        "ai.lane.urgent",
        done=lambda kept: False,
        match=lambda r: r.value is not None and request.request_id.encode() in r.value,
        timeout=2,
    )
    assert len(routed) == 1
    assert len(simulator.calls(tag)) == 1
    usage = await router.usage(request.user_id, count=1)
    assert len(usage) == 1 and usage[0].request_id == request.request_id
