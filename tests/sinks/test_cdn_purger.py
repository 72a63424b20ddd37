"""The CDN sink over real HTTP against the CDN simulator (its own instance on loopback, so
faults injected here do not reach the shared worker)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from devkit.stack import cdn_simulator
from devkit.stack.processes import free_port
from runtime.sink import SinkStopping
from sinks.cdn import CdnPurger, CdnSettings, Provider, ProviderSettings, PurgeKind
from sinks.retry import STOPPING

pytestmark = pytest.mark.integration


@pytest.fixture
async def simulator() -> AsyncIterator[str]:
    port = free_port()
    runner = await cdn_simulator.start("127.0.0.1", port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def control(simulator: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=simulator) as client:
        yield client


def settings(
    base_url: str,
    *providers: Provider,
    rate: float = 1000,
    burst: int = 1000,
) -> CdnSettings:
    return CdnSettings(
        tuple(
            ProviderSettings(p, base_url, "secret", "acct", rate, burst, concurrency=4)
            for p in providers
        ),
        timeout=5,
        backoff_base=0.05,
        backoff_cap=0.2,
    )


async def _calls(control: httpx.AsyncClient) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = (await control.get("/_sim/requests")).json()["calls"]
    return calls


async def _purges(control: httpx.AsyncClient, **query: str) -> list[dict[str, Any]]:
    purges: list[dict[str, Any]] = (await control.get("/_sim/purges", params=query)).json()[
        "purges"
    ]
    return purges


async def test_both_providers_in_their_batch_sizes(
    simulator: str, control: httpx.AsyncClient
) -> None:
    purger = CdnPurger(settings(simulator, Provider.FASTLY, Provider.CLOUDFLARE))
    urls = [f"https://cdn.example/w/{i}?v=1" for i in range(65)]
    tags = [f"world-{i}" for i in range(300)]
    try:
        assert await purger.purge(urls, tags) == []
    finally:
        await purger.aclose()
    calls = await _calls(control)
    by_provider_kind: dict[tuple[str, str], list[int]] = {}
    for call in calls:
        assert call["status"] == 200
        kind = "url" if "/purge/" in call["path"] or call["targets"][0] in urls else "tag"
        by_provider_kind.setdefault((call["provider"], kind), []).append(len(call["targets"]))
    assert sorted(by_provider_kind[("fastly", "tag")]) == [44, 256]
    assert by_provider_kind[("fastly", "url")] == [1] * 65
    assert sorted(by_provider_kind[("cloudflare", "url")]) == [5, 30, 30]
    assert sorted(by_provider_kind[("cloudflare", "tag")]) == [*[30] * 10]
    fastly_urls = {p["target"] for p in await _purges(control, provider="fastly", kind="url")}
    assert fastly_urls == {u.removeprefix("https://") for u in urls}
    cloudflare_tags = {
        p["target"] for p in await _purges(control, provider="cloudflare", kind="tag")
    }
    assert cloudflare_tags == set(tags)


async def test_a_429_holds_the_provider_for_retry_after(
    simulator: str, control: httpx.AsyncClient
) -> None:
    await control.post(
        "/_sim/faults",
        json={"provider": "cloudflare", "status": 429, "count": 1, "retry_after": "1"},
    )
    purger = CdnPurger(settings(simulator, Provider.CLOUDFLARE))
    try:
        (failure,) = await purger.purge([], ["t1"])
        assert (failure.retryable, failure.retry_after) == (True, 1.0)
        assert await purger.retry([failure]) == []
    finally:
        await purger.aclose()
    first, second = await _calls(control)
    assert (first["status"], second["status"]) == (429, 200)
    assert second["at"] - first["at"] >= 0.95


async def test_one_attempt_per_call_and_retry_sends_only_what_failed(
    simulator: str, control: httpx.AsyncClient
) -> None:
    await control.post("/_sim/faults", json={"provider": "fastly", "status": 503, "count": 1})
    purger = CdnPurger(settings(simulator, Provider.FASTLY, Provider.CLOUDFLARE))
    try:
        (failure,) = await purger.purge([], ["t1"])
        assert (failure.provider, failure.kind, failure.targets) == (
            "fastly",
            PurgeKind.TAG,
            ("t1",),
        )
        assert failure.retryable and "503" in failure.reason
        assert await purger.retry([failure]) == []
    finally:
        await purger.aclose()
    calls = [(c["provider"], c["status"]) for c in await _calls(control)]
    assert sorted(calls) == [("cloudflare", 200), ("fastly", 200), ("fastly", 503)]


async def test_a_client_error_is_not_retryable(simulator: str, control: httpx.AsyncClient) -> None:
    await control.post("/_sim/faults", json={"provider": "cloudflare", "status": 403, "count": 1})
    purger = CdnPurger(settings(simulator, Provider.CLOUDFLARE))
    try:
        (failure,) = await purger.purge([], ["t"])
    finally:
        await purger.aclose()
    assert "403" in failure.reason
    assert not failure.retryable
    assert len(await _calls(control)) == 1


async def test_an_unreachable_api_fails_with_the_transport_error() -> None:
    purger = CdnPurger(settings(f"http://127.0.0.1:{free_port()}", Provider.CLOUDFLARE))
    try:
        (failure,) = await purger.purge(["https://cdn.example/a"], [])
    finally:
        await purger.aclose()
    assert "ConnectError" in failure.reason
    assert failure.retryable


async def test_the_rate_limit_spaces_calls(simulator: str, control: httpx.AsyncClient) -> None:
    purger = CdnPurger(settings(simulator, Provider.FASTLY, rate=20, burst=2))
    started = time.monotonic()
    try:
        assert await purger.purge([f"https://cdn.example/{i}" for i in range(12)], []) == []
    finally:
        await purger.aclose()
    # Two at once, then ten at 20/s: at least 0.5 s.
    assert time.monotonic() - started >= 0.45
    assert len(await _calls(control)) == 12


async def test_simulator_checks_the_api_shapes(simulator: str) -> None:
    async with httpx.AsyncClient(base_url=simulator) as http:
        assert (
            await http.post("/service/s/purge", json={"surrogate_keys": ["a"]})
        ).status_code == 401
        too_many = {"surrogate_keys": [str(i) for i in range(257)]}
        response = await http.post("/service/s/purge", json=too_many, headers={"Fastly-Key": "k"})
        assert response.status_code == 400
        by_header = await http.post(
            "/service/s/purge", headers={"Fastly-Key": "k", "Surrogate-Key": "a b"}
        )
        assert set(by_header.json()) == {"a", "b"}
        bearer = {"Authorization": "Bearer t"}
        both = await http.post(
            "/zones/z/purge_cache", json={"files": ["x"], "tags": ["y"]}, headers=bearer
        )
        assert both.status_code == 400
        assert both.json()["success"] is False
        ok = await http.post("/zones/z/purge_cache", json={"tags": ["y"]}, headers=bearer)
        assert ok.json()["success"] is True
        bad_fault = await http.post("/_sim/faults", json={"status": 200})
        assert bad_fault.status_code == 400
        stats = (await http.get("/_sim/stats")).json()
        assert stats["purges"] == {"fastly": {"tag": 2}, "cloudflare": {"tag": 1}}


async def test_simulator_timed_faults_answer_in_order_until_they_run_out(simulator: str) -> None:
    async with httpx.AsyncClient(base_url=simulator) as http:
        await http.post("/_sim/faults", json={"status": 500, "seconds": 0.3})
        await http.post("/_sim/faults", json={"status": 429, "seconds": 0.6, "retry_after": "1"})
        bearer = {"Authorization": "Bearer t"}

        async def purge() -> httpx.Response:
            return await http.post("/zones/z/purge_cache", json={"tags": ["y"]}, headers=bearer)

        first, second = await purge(), await purge()
        assert (first.status_code, second.status_code) == (500, 500)
        await asyncio.sleep(0.35)
        limited = await purge()
        assert limited.status_code == 429 and limited.headers["Retry-After"] == "1"
        await asyncio.sleep(0.3)
        assert (await purge()).status_code == 200
        assert (
            await http.post("/_sim/faults", json={"status": 500, "seconds": 0})
        ).status_code == 400


async def test_a_stop_ends_a_purge_waiting_for_its_turn(simulator: str) -> None:
    """Twenty URLs at Fastly (one a call) at two calls a second: a stop after the first ones
    ends the purge at once, not when the last call's turn comes ten seconds later, and none of
    its calls goes on without it (they would post after the sink was closed)."""
    purger = CdnPurger(settings(simulator, Provider.FASTLY, rate=2, burst=1))
    urls = [f"https://cdn.example/w/{i}" for i in range(20)]
    purging = asyncio.create_task(purger.purge(urls, []))
    try:
        await asyncio.sleep(0.3)
        STOPPING.set()
        started = time.monotonic()
        with pytest.raises(SinkStopping):
            await asyncio.wait_for(purging, 3)
        assert time.monotonic() - started < 1.0
    finally:
        STOPPING.clear()
    try:
        left = [
            task
            for task in asyncio.all_tasks()
            if not task.done() and getattr(task.get_coro(), "__qualname__", "") == "CdnPurger._send"
        ]
        assert left == [], "calls of the stopped purge still wait for their turn"
    finally:
        await purger.aclose()
