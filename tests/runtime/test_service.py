"""The Faust worker's host of a flow: it starts without waiting for the flow's servers, and
stops while the flow is still being built."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

from runtime.service import (
    FULL_COLLECTION_EVERY,
    YOUNG_COLLECTION_AFTER,
    FlowService,
    Running,
    freeze_long_lived,
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


def test_what_lives_once_a_flow_started_is_frozen_and_collections_come_rarer() -> None:
    threshold = gc.get_threshold()
    long_lived = [[n] for n in range(10)]  # containers, which the collector tracks
    try:
        gc.unfreeze()
        freeze_long_lived()
        assert gc.get_freeze_count() >= len(long_lived)
        assert gc.get_threshold() == (YOUNG_COLLECTION_AFTER, threshold[1], FULL_COLLECTION_EVERY)
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
