"""`scribe world show WORLD` and `scribe world replay WORLD`."""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass

import asyncpg
import click
import orjson

from agents.world.history import rebuild_from_log
from agents.world.model import Clock, WorldState, canonical_json, state_hash
from agents.world.replay import ReplayError, first_difference
from runtime.settings import ResolvedSettings
from sinks.postgres.databases import Databases
from sinks.postgres.world import StoredWorld


@click.group()
def world() -> None:
    """Persistent worlds: their state in PostgreSQL and their replayable event log."""


async def current_state(databases: Databases, world_id: str) -> tuple[StoredWorld, WorldState]:
    """A world as stored: its checkpoint with the inputs logged after it replayed on top (read
    from the read replica while it is fresh enough)."""

    async def read(pool: asyncpg.Pool) -> tuple[StoredWorld, WorldState]:
        async with (
            pool.acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            row = await conn.fetchrow(
                "SELECT world_id, version, tick, state::text AS state_json, state_hash, "
                "coalesce(head_version, version) AS head_version, active, last_activity_at, "
                "next_tick_at, updated_at "
                "FROM world_state WHERE world_id = $1",
                world_id,
            )
            if row is None:
                raise click.ClickException(f"world {world_id!r} has no stored state")
            stored = StoredWorld(**dict(row))
            checkpoint = WorldState.from_dict(orjson.loads(stored.state_json))
            state = await rebuild_from_log(conn, world_id, stored.head_version, start=checkpoint)
        return stored, state

    return await databases.read(read)


def summary(state: WorldState) -> list[str]:
    """A readable summary of a world, a line per fact."""
    title = f"{state.name} ({state.world_id})" if state.name else state.world_id
    lines = [
        f"{title}: {Clock(state.tick)}, {state.weather.value}, tick {state.tick}, "
        f"version {state.version}, {'loaded' if state.loaded else 'unloaded'}",
        f"  {len(state.locations)} locations, {len(state.npcs)} NPCs, "
        f"{len(state.factions)} factions, {len(state.items)} items, {state.memories} memories",
    ]
    market = state.market
    prices = ", ".join(f"{name} {market.prices[name]}" for name in sorted(market.prices))
    lines.append(f"  market: treasury {market.treasury}; prices {prices}")
    for faction_id in sorted(state.factions):
        faction = state.factions[faction_id]
        lines.append(
            f"  faction {faction.name}: treasury {faction.treasury}, "
            f"reputation {faction.reputation}"
        )
    for npc_id in sorted(state.npcs):
        npc = state.npcs[npc_id]
        place = state.locations.get(npc.location_id or "")
        where = place.name if place else (npc.location_id or "nowhere")
        friends = sum(1 for v in npc.relationships.values() if v >= 50)
        lines.append(
            f"  {npc.name:<10} {npc.activity.value:<11} at {where:<22} hunger {npc.hunger:>4} "
            f"energy {npc.energy:>4} wealth {npc.wealth:>5} friends {friends}"
        )
    return lines


@world.command("show")
@click.argument("world_id")
def show(world_id: str) -> None:
    """A readable summary of WORLD as stored (its last checkpoint and the log after it)."""
    from scribe.cli.settings import resolved_settings

    async def read() -> tuple[StoredWorld, WorldState]:
        async with Databases.from_settings(resolved_settings(), max_size=1) as databases:
            return await current_state(databases, world_id)

    stored, state = asyncio.run(read())
    for line in summary(state):
        click.echo(line)
    status = "ticking" if stored.active else "idle"
    click.echo(
        f"  {status}; log head version {stored.head_version}, checkpoint at version "
        f"{stored.version}; written {stored.updated_at:%Y-%m-%d %H:%M:%S} UTC"
    )
    click.echo(f"  state hash {state_hash(state)}")


@dataclass(frozen=True)
class ReplayResult:
    world_id: str
    version: int  # the checkpoint compared
    head_version: int
    live_hash: str
    replayed_hash: str
    difference: str | None

    @property
    def matches(self) -> bool:
        return self.live_hash == self.replayed_hash and self.difference is None


async def replay_world(databases: Databases, world_id: str) -> ReplayResult:
    """Rebuild WORLD from an empty world through its stored inputs up to its checkpoint (the
    state the live worker computed and stored), compare the two, then check that the inputs
    logged after the checkpoint replay too. Reads the read replica while it is fresh enough:
    a replica's snapshot holds the log and world_state of one moment as the primary's does."""

    async def read(pool: asyncpg.Pool) -> ReplayResult:
        # One snapshot of the database: the log and world_state as of the same moment.
        async with (
            pool.acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            row = await conn.fetchrow(
                "SELECT version, coalesce(head_version, version) AS head_version, "
                "state::text AS state, state_hash "
                "FROM world_state WHERE world_id = $1",
                world_id,
            )
            if row is None:
                raise click.ClickException(f"world {world_id!r} has no stored state")
            version, head, live_hash = row["version"], row["head_version"], row["state_hash"]
            try:
                replayed = await rebuild_from_log(conn, world_id, version)
                tail = await rebuild_from_log(conn, world_id, head, start=replayed)
            except ReplayError as exc:
                return ReplayResult(world_id, version, head, live_hash, "", str(exc))
        difference = first_difference(
            orjson.loads(row["state"]), orjson.loads(canonical_json(replayed))
        )
        replayed_hash = state_hash(replayed)
        if difference is None and replayed_hash != live_hash:
            difference = f"state_hash: stored {live_hash} != recomputed {replayed_hash}"
        if difference is None and tail.version != head:
            difference = f"the log after the checkpoint ends at version {tail.version}, not {head}"
        return ReplayResult(world_id, version, head, live_hash, replayed_hash, difference)

    return await databases.read(read)


async def _stored_world_ids(databases: Databases) -> list[str]:
    rows = await databases.read(
        lambda pool: pool.fetch("SELECT world_id FROM world_state ORDER BY world_id")
    )
    return [row["world_id"] for row in rows]


async def _replay_all(
    settings: ResolvedSettings, world_ids: tuple[str, ...], every: bool
) -> list[ReplayResult]:
    async with Databases.from_settings(settings, max_size=1) as databases:
        if every:
            world_ids = (*world_ids, *await _stored_world_ids(databases))
        if not world_ids:
            raise click.UsageError("name at least one WORLD, or pass --all")
        return [await replay_world(databases, w) for w in dict.fromkeys(world_ids)]


@world.command("replay")
@click.argument("world_ids", metavar="WORLD...", nargs=-1)
@click.option("--all", "every", is_flag=True, help="Replay every stored world.")
def replay(world_ids: tuple[str, ...], every: bool) -> None:
    """Rebuild each WORLD from its stored events and compare its hash with the live state.

    Prints `match`, or `MISMATCH` with the first differing field (live != replayed), per
    world; exits 1 if any world does not match.
    """
    from scribe.cli.settings import resolved_settings

    if not (world_ids or every):
        raise click.UsageError("name at least one WORLD, or pass --all")
    mismatches = 0
    for result in asyncio.run(_replay_all(resolved_settings(), world_ids, every)):
        world_id = result.world_id
        if result.matches:
            click.echo(
                f"match  {world_id} version {result.version} hash {result.live_hash} "
                f"(and {result.head_version - result.version} input(s) logged after it replay)"
            )
        else:
            mismatches += 1
            click.echo(f"MISMATCH  {world_id} version {result.version}: {result.difference}")
    if mismatches:
        sys.exit(1)
