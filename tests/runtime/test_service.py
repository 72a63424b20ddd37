"""The Faust worker's host of a flow: it starts without waiting for the flow's servers, and
stops while the flow is still being built; and the collector settings and timing it installs."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

from prometheus_client import REGISTRY

from runtime.service import (
    FULL_COLLECTION_EVERY,
    YOUNG_COLLECTION_AFTER,
    FlowService,
    Running,
    freeze_long_lived,
    time_collections,
)


async def test_a_flow_waiting_for_its_servers_neither_holds_up_start_nor_stop() -> None:
    building = asyncio.Event()

    async def build() -> Any:
        building.set()
        await asyncio.Event().wait()  # Redis never answers

    settings: Any = None  # never read: the flow is never built
    running: Running[Any] = Running()
    stop_together: list[Any] = []
    service = FlowService(
        build, settings, stop_together=stop_together, running=running, name="waiting"
    )
    async with asyncio.timeout(10):
        await service.start()
        await building.wait()
        assert service.label == "Flow[waiting]"
        assert running.runner is None
        assert stop_together == [service]
        await service.stop()


def _full_collections() -> float:
    labels = {"generation": "2"}
    return REGISTRY.get_sample_value("scribe_gc_pause_seconds_count", labels) or 0.0


def test_what_lives_once_a_flow_started_is_frozen_and_collections_come_rarer() -> None:
    threshold = gc.get_threshold()
    long_lived = [[n] for n in range(10)]  # containers, which the collector tracks
    timed_before = _full_collections()
    try:
        gc.unfreeze()
        freeze_long_lived()
        assert gc.get_freeze_count() >= len(long_lived)
        assert gc.get_threshold() == (YOUNG_COLLECTION_AFTER, threshold[1], FULL_COLLECTION_EVERY)
        assert _full_collections() > timed_before  # its own full collection was timed
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


def _collections(generation: str) -> tuple[float, float]:
    """The pause histogram's count and sum for one generation so far."""
    labels = {"generation": generation}
    count = REGISTRY.get_sample_value("scribe_gc_pause_seconds_count", labels)
    total = REGISTRY.get_sample_value("scribe_gc_pause_seconds_sum", labels)
    assert count is not None and total is not None  # the child exists once timing is installed
    return count, total


def test_each_collection_is_timed_once_under_its_generation() -> None:
    time_collections()
    time_collections()  # as each flow's start does: still one observation per collection
    enabled = gc.isenabled()
    gc.disable()  # only the collections below: reading the registry allocates enough for more
    try:
        before = {g: _collections(g) for g in ("0", "1", "2")}
        gc.collect()  # a full collection: generation 2
        gc.collect(0)
        after = {g: _collections(g) for g in ("0", "1", "2")}
    finally:
        if enabled:
            gc.enable()
    counted = {g: after[g][0] - before[g][0] for g in after}
    assert counted == {"0": 1, "1": 0, "2": 1}
    assert after["2"][1] > before["2"][1]
    assert after["0"][1] > before["0"][1]
