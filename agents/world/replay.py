"""Rebuild a world from its stored inputs and say where two states first differ.

The log holds every input a world applied (player and AI events, ticks) in the order it
applied them, numbered 1, 2, 3 ... by `seq`. Replaying them from an empty world through the
same pure `apply_event` and `step` must give the state the live worker saved, hash for hash.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from agents.world.apply import Applied, apply_event
from agents.world.model import WorldState
from agents.world.step import step
from schemas.events import WorldEvent


class ReplayError(RuntimeError):
    """The stored log cannot be replayed as it stands (a gap, or an input that no longer
    applies): the live state and the log have diverged."""


@dataclass(frozen=True)
class LoggedInput:
    """One stored input: a tick (`event` is None) or an event, at log position `seq`."""

    seq: int
    tick: int
    event: WorldEvent | None = None


def rebuild(
    world_id: str, inputs: Iterable[LoggedInput], start: WorldState | None = None
) -> WorldState:
    """Apply `inputs` in order to `start` (default: an empty world)."""
    state = start if start is not None else WorldState(world_id)
    for logged in inputs:
        if logged.seq != state.version + 1:
            raise ReplayError(
                f"world {world_id}: the log jumps from seq {state.version} to {logged.seq}"
            )
        if logged.event is None:
            if logged.tick != state.tick + 1:
                raise ReplayError(
                    f"world {world_id}: seq {logged.seq} is tick {logged.tick} but the world "
                    f"is at tick {state.tick}"
                )
            state, _ = step(state, logged.tick)
            continue
        outcome = apply_event(state, logged.event)
        if not isinstance(outcome, Applied):
            raise ReplayError(
                f"world {world_id}: stored event {logged.event.event_id} (seq {logged.seq}) "
                f"does not apply on replay: {outcome}"
            )
        state = outcome.state
    return state


def first_difference(expected: Any, actual: Any, path: str = "") -> str | None:
    """The first field (in sorted key order) where two JSON-like values differ, e.g.
    `npcs.npc-3.hunger: 412 != 418`; None when they are equal."""
    where = path or "(state)"
    if isinstance(expected, dict) and isinstance(actual, dict):
        for key in sorted(set(expected) | set(actual)):
            child = f"{path}.{key}" if path else str(key)
            if key not in expected:
                return f"{child}: missing != {actual[key]!r}"
            if key not in actual:
                return f"{child}: {expected[key]!r} != missing"
            found = first_difference(expected[key], actual[key], child)
            if found:
                return found
        return None
    if isinstance(expected, list) and isinstance(actual, list):
        for index, (left, right) in enumerate(zip(expected, actual, strict=False)):
            found = first_difference(left, right, f"{path}[{index}]")
            if found:
                return found
        if len(expected) != len(actual):
            return f"{where}: {len(expected)} items != {len(actual)} items"
        return None
    if expected != actual or type(expected) is not type(actual):
        return f"{where}: {expected!r} != {actual!r}"
    return None
