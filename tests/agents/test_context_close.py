"""The worker's shared clients close in turn at the end of a stop, each on its own: one that
fails or hangs does not leave the others open."""

from __future__ import annotations

import asyncio

import faust
import pytest

from agents.context import Resources
from runtime.settings import ResolvedSettings, Settings


def resources() -> Resources:
    url = "kafka://127.0.0.1:9"
    settings = ResolvedSettings(Settings(kafka_url=url), url, "", "redis://127.0.0.1:9/0")
    return Resources(faust.App("test-context-close", broker=url), settings)


async def test_a_client_that_fails_or_hangs_does_not_keep_the_others_open(
    caplog: pytest.LogCaptureFixture,
) -> None:
    shared = resources()
    closed: list[str] = []

    async def fails() -> None:
        raise RuntimeError("connection reset")

    async def hangs() -> None:
        await asyncio.sleep(3600)

    async def closes() -> None:
        closed.append("cdn client")

    shared.on_close("provider clients", fails)
    shared.on_close("image store", hangs)
    shared.on_close("cdn client", closes)
    await asyncio.wait_for(shared.close(deadline=0.2), 5)

    assert closed == ["cdn client"]
    assert "provider clients failed to close" in caplog.text
    assert "image store not closed within 0 s" in caplog.text
    with pytest.raises(RuntimeError, match="pool is closed"):
        await shared.database()
