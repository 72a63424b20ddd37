"""The event loop `scribe worker` and `scribe gateway` run on: uvloop (libuv) by default,
or asyncio's own loop (`SCRIBE_EVENT_LOOP=asyncio`). On the router's path at 200 requests/s
uvloop cost the worker 1-4 % less CPU per request (`bench/README.md`)."""

from __future__ import annotations

import asyncio

EVENT_LOOPS = ("uvloop", "asyncio")


class EventLoopUnavailableError(RuntimeError):
    """The configured loop cannot be used on this machine."""


def use_event_loop(name: str) -> None:
    """Make `name` the loop that every later `asyncio.run` and `new_event_loop` creates. Call
    it before any loop exists: Faust's worker and aiohttp's server create theirs later."""
    if name not in EVENT_LOOPS:
        raise ValueError(f"unknown event loop {name!r}; one of {', '.join(EVENT_LOOPS)}")
    if name == "asyncio":
        asyncio.set_event_loop_policy(None)
        return
    try:
        import uvloop
    except ImportError:
        raise EventLoopUnavailableError(
            "uvloop is not installed here (it has no Windows build); install the project's "
            "dependencies, or set SCRIBE_EVENT_LOOP=asyncio"
        ) from None
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def running_loop_name() -> str:
    """`uvloop` or `asyncio`: what the running loop is, for the start-up log."""
    module = type(asyncio.get_running_loop()).__module__
    return "uvloop" if module.startswith("uvloop") else "asyncio"
