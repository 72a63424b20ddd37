"""The worker's and the gateway's event loop: uvloop unless SCRIBE_EVENT_LOOP=asyncio, and a
clear error where uvloop is missing."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator

import pytest

from runtime.event_loop import (
    EventLoopUnavailableError,
    running_loop_name,
    use_event_loop,
)
from runtime.settings import Settings, SettingsError


@pytest.fixture(autouse=True)
def default_policy_after() -> Iterator[None]:
    yield
    asyncio.set_event_loop_policy(None)


async def loop_name() -> str:
    return running_loop_name()


@pytest.mark.parametrize("name", ["uvloop", "asyncio"])
def test_the_loop_asyncio_run_creates_is_the_one_named(name: str) -> None:
    use_event_loop(name)
    assert asyncio.run(loop_name()) == name
    loop = asyncio.new_event_loop()  # what aiohttp's run_app and Faust's worker start with
    try:
        assert loop.run_until_complete(loop_name()) == name
    finally:
        loop.close()


def test_an_unknown_loop_is_refused() -> None:
    with pytest.raises(ValueError, match="one of uvloop, asyncio"):
        use_event_loop("trio")


def test_uvloop_missing_says_what_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # `import uvloop` now raises ImportError
    with pytest.raises(EventLoopUnavailableError, match="SCRIBE_EVENT_LOOP=asyncio"):
        use_event_loop("uvloop")
    use_event_loop("asyncio")
    assert asyncio.run(loop_name()) == "asyncio"


def test_the_setting_defaults_to_uvloop_and_names_the_choices(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SCRIBE_EVENT_LOOP", raising=False)
    assert Settings.from_env().event_loop == "uvloop"
    monkeypatch.setenv("SCRIBE_EVENT_LOOP", "asyncio")
    assert Settings.from_env().event_loop == "asyncio"
    monkeypatch.setenv("SCRIBE_EVENT_LOOP", "tokio")
    with pytest.raises(SettingsError, match="SCRIBE_EVENT_LOOP: 'tokio' is not one of uvloop"):
        Settings.from_env()
