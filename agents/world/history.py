"""A world rebuilt from its stored log: how a worker loads a world (its checkpoint plus the
inputs logged after it), and what `scribe world replay` compares with the checkpoint."""

from __future__ import annotations

from agents.world.model import WorldState
from agents.world.replay import LoggedInput, rebuild
from schemas.codec import parse_json
from schemas.events import WorldEvent
from sinks.postgres.world import Connection, LogRecord, logged_inputs


def logged_input(world_id: str, record: LogRecord) -> LoggedInput:
    if record.source == "tick":
        return LoggedInput(record.seq, record.tick)
    event = WorldEvent(
        event_id=record.event_id,
        world_id=world_id,
        type=record.type,
        payload=parse_json(record.payload),
        occurred_at=record.occurred_at,
        version=record.producer_version,
    )
    return LoggedInput(record.seq, record.tick, event)


async def rebuild_from_log(
    conn: Connection, world_id: str, up_to: int, start: WorldState | None = None
) -> WorldState:
    """The world after its stored inputs up to `up_to`, replayed on `start` (a checkpoint)
    or from an empty world."""
    state = start if start is not None else WorldState(world_id)
    async for chunk in logged_inputs(conn, world_id, up_to, after=state.version):
        state = rebuild(world_id, (logged_input(world_id, r) for r in chunk), start=state)
    return state
