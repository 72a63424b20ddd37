"""`scribe costs report` and the worker's /costs/report page report the exact month-to-date
spend of what was published, by service and model, with the free-tier image share."""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from decimal import Decimal

import httpx
import pytest

from agents.usage.flow import USAGE
from agents.usage.synthetic import synthetic_usage
from devkit.harness import WorkerProcess
from tests.integration.usage_pipeline import (
    expected_cost,
    publish,
    scribe,
    wait_committed_past,
)

pytestmark = pytest.mark.integration


async def test_report_cli_and_page_match_the_published_usage(
    services: dict[str, str], kafka_url: str, worker: WorkerProcess
) -> None:
    run = f"ur{uuid.uuid4().hex[:8]}"
    items = list(synthetic_usage(run, 3000, users=1, seed=3))  # this month so far
    user = f"{run}-u0"
    last = await publish(kafka_url, items)
    await wait_committed_past(
        kafka_url, USAGE.group_of(worker.app_id), last, timeout=60, log=worker.log_tail
    )
    by_model: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for item in items:
        by_model[(item.fields["service"], item.fields["model"])] += expected_cost(item.fields)
    images = sum(i.fields["images"] for i in items)
    free_images = sum(i.fields["images"] for i in items if i.fields["free_tier"])

    report = json.loads(await scribe(services, "costs", "report", "--user", user, "--json"))
    assert report["user_id"] == user
    assert Decimal(report["total_usd"]) == sum(by_model.values())
    assert {(m["service"], m["model"]): Decimal(m["cost_usd"]) for m in report["by_model"]} == (
        by_model
    )
    assert report["requests"] == len(items)
    assert (report["images"], report["free_tier_images"]) == (images, free_images)
    assert Decimal(report["free_tier_image_share"]) == Decimal(free_images) / images
    assert Decimal(report["projected_month_end_usd"]) >= Decimal(report["total_usd"])
    assert isinstance(report["recommendations"], list)

    async with httpx.AsyncClient(base_url=worker.url, timeout=30) as client:
        page = (await client.get("/costs/report", params={"user": user})).json()
        assert (page["total_usd"], page["by_model"]) == (report["total_usd"], report["by_model"])
        refused = await client.get("/costs/report", params={"month": "2026-13"})
        assert refused.status_code == 400
        assert "YYYY-MM" in refused.json()["error"]

    text = await scribe(services, "costs", "report", "--user", user)
    assert f"Costs for user {user}" in text
    assert "projected month-end" in text
    assert "free-tier share of image generation" in text
