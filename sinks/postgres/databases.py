"""The PostgreSQL pools of one process, and the one place that decides which serves a read.

`primary()` serves writes and every read that must see them (budget checks that gate spending,
dedupe, the flows' own transactions). `read(work)` runs reads that may be a few seconds behind
(cost reports, the dashboard's cost totals, world inspection, cache warming) on the pool
`for_reads()` picks: the replica named by SCRIBE_DATABASE_READ_URL while its lag is within
SCRIBE_DATABASE_READ_MAX_LAG_S, else the primary, each such fallback counted in
`scribe_db_read_fallbacks_total{reason}`. Without a replica both are the primary."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, TypeVar

import asyncpg

from runtime.metrics import DB_READ_FALLBACKS
from runtime.settings import ResolvedSettings

log = logging.getLogger(__name__)

T = TypeVar("T")


async def keep_session(connection: asyncpg.Connection) -> None:
    """Every pool's `reset`: nothing beyond asyncpg's own rollback of a transaction left open,
    which runs before it. asyncpg's default also sends `pg_advisory_unlock_all(); CLOSE ALL;
    UNLISTEN *; RESET ALL` as each connection goes back to its pool: one more round trip for
    every write, undoing session state nothing here leaves behind (no LISTEN, session-level
    advisory lock, cursor outside a transaction or SET)."""


# The replica's lag in seconds. Replaying everything it has received while still streaming
# means it is current, however old its last replayed transaction is: an idle primary writes
# nothing, and `now() - pg_last_xact_replay_timestamp()` alone would then grow without bound.
# Behind, or not streaming (the primary is gone, or the link is broken), its staleness is the
# age of its last replayed transaction, unbounded when it has replayed none since it started.
# Not in recovery, it is a primary itself: nothing to lag behind.
REPLICA_LAG_SQL = """
SELECT CASE
    WHEN NOT pg_is_in_recovery() THEN 0
    WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn()
         AND EXISTS (SELECT 1 FROM pg_stat_wal_receiver WHERE status = 'streaming') THEN 0
    ELSE coalesce(
        extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8, 'Infinity'
    )
END::float8
"""
# A replica that takes longer than this to connect or answer counts as unreachable.
PROBE_TIMEOUT_S = 2.0
# So the replica's sessions are told apart from the primary's in pg_stat_activity.
READ_APPLICATION_NAME = "scribe-read"
LAG_PROBE_APPLICATION_NAME = "scribe-read-lag"
# A read that fails so on the replica was not answered by a server: it is asked of the primary.
REPLICA_GONE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,  # among them: the connection closed under the query
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CannotConnectNowError,
)


def fallback_reason(lag_s: float | None, max_lag_s: float) -> str | None:
    """Why reads must go to the primary (`unreachable`, `lagging`), or None when the replica
    may serve them. `lag_s` None: the replica could not be asked."""
    if lag_s is None:
        return "unreachable"
    if lag_s > max_lag_s:
        return "lagging"
    return None


class ReplicaVerdict:
    """The last measured verdict on the replica, measured again at most every `check_s`."""

    def __init__(
        self, max_lag_s: float, check_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_lag_s = max_lag_s
        self.check_s = check_s
        self.clock = clock
        self.reason: str | None = "unreachable"  # until first measured
        self.lag_s: float | None = None
        self._measured_at: float | None = None

    @property
    def due(self) -> bool:
        return self._measured_at is None or self.clock() - self._measured_at >= self.check_s

    def record(self, lag_s: float | None) -> str | None:
        self.lag_s = lag_s
        self.reason = fallback_reason(lag_s, self.max_lag_s)
        self._measured_at = self.clock()
        return self.reason


class Databases:
    """The primary's pool and, with a read URL, the replica's; each opened on first use."""

    def __init__(
        self,
        primary_url: str,
        read_url: str | None = None,
        *,
        max_lag_s: float = 5.0,
        check_s: float = 1.0,
        min_size: int = 1,
        max_size: int = 8,
        connect_options: dict[str, Any] | None = None,
    ) -> None:
        self.primary_url = primary_url
        self.read_url = read_url
        self.verdict = ReplicaVerdict(max_lag_s, check_s)
        self.min_size, self.max_size = min_size, max_size
        self._options = connect_options or {}
        self._primary: asyncpg.Pool | None = None
        self._replica: asyncpg.Pool | None = None
        self._probe: asyncpg.Connection | None = None
        self._lock = asyncio.Lock()
        self._replica_lock = asyncio.Lock()
        self._probe_lock = asyncio.Lock()
        self._closed = False
        self._last_noted: str | None = "unmeasured"  # the first measurement is logged

    @classmethod
    def from_settings(cls, settings: ResolvedSettings, max_size: int = 8) -> Databases:
        base = settings.base
        return cls(
            settings.database_url,
            base.database_read_url,
            max_lag_s=base.database_read_max_lag_s,
            check_s=base.database_read_check_s,
            min_size=1,
            max_size=max_size,
            connect_options=settings.database_options,
        )

    async def primary(self) -> asyncpg.Pool:
        async with self._lock:
            self._check_open()
            if self._primary is None:
                self._primary = await asyncpg.create_pool(
                    self.primary_url,
                    min_size=self.min_size,
                    max_size=self.max_size,
                    reset=keep_session,
                    **self._options,
                )
            return self._primary

    async def for_reads(self) -> asyncpg.Pool:
        """The replica's pool while it is reachable and within the lag allowed, else the
        primary's (and the fallback counted)."""
        if self.read_url is None:
            return await self.primary()
        if self.verdict.due:
            async with self._probe_lock:
                if self.verdict.due:  # not measured meanwhile by a read that waited first
                    self._note(self.verdict.record(await self._measure_lag()))
        if self.verdict.reason is None:
            replica = await self._replica_pool()
            if replica is not None:
                return replica
        DB_READ_FALLBACKS.labels(reason=self.verdict.reason or "unreachable").inc()
        return await self.primary()

    async def read(self, work: Callable[[asyncpg.Pool], Awaitable[T]]) -> T:
        """`work(pool)` on the pool `for_reads` picks; if the replica goes away under it, or
        cancels it for a conflict with recovery (replay needed a lock or row version the
        query held), `work` runs again on the primary, counted. `work` only reads."""
        pool = await self.for_reads()
        if pool is not self._replica:
            return await work(pool)
        try:
            return await work(pool)
        except REPLICA_GONE as error:
            reason = "unreachable"
            self._note(self.verdict.record(None))
            detail = f"{type(error).__name__}: {error}"
        except asyncpg.SerializationError as error:  # a standby's only one: recovery conflict
            reason = "recovery_conflict"
            detail = str(error)
        log.warning("read asked of the primary: read replica %s (%s)", reason, detail)
        DB_READ_FALLBACKS.labels(reason=reason).inc()
        return await work(await self.primary())

    async def _measure_lag(self) -> float | None:
        """The replica's lag, asked on a connection of its own: a pool busy with long reports
        must not make a healthy replica look unreachable."""
        try:
            return await asyncio.wait_for(self._ask_lag(), PROBE_TIMEOUT_S)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
            log.debug("read replica not measured: %s: %s", type(error).__name__, error)
            probe, self._probe = self._probe, None
            if probe is not None:
                probe.terminate()
            return None

    async def _ask_lag(self) -> float | None:
        if self._probe is None or self._probe.is_closed():
            assert self.read_url is not None
            self._probe = await asyncpg.connect(
                self.read_url,
                **self._options,
                server_settings={"application_name": LAG_PROBE_APPLICATION_NAME},
            )
        lag: float | None = await self._probe.fetchval(REPLICA_LAG_SQL)
        return lag

    async def _replica_pool(self) -> asyncpg.Pool | None:
        """The replica's pool, opened once it was found fresh; None (and the replica marked
        unreachable) if it cannot be opened."""
        async with self._replica_lock:
            self._check_open()
            if self._replica is None:
                assert self.read_url is not None
                try:
                    self._replica = await asyncio.wait_for(
                        asyncpg.create_pool(
                            self.read_url,
                            min_size=self.min_size,
                            max_size=self.max_size,
                            reset=keep_session,
                            **self._options,
                            server_settings={"application_name": READ_APPLICATION_NAME},
                        ),
                        PROBE_TIMEOUT_S,
                    )
                except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
                    self._note(self.verdict.record(None))
                    return None
            return self._replica

    def _note(self, reason: str | None) -> None:
        """Log when reads change sides, not on every measurement."""
        if reason != self._last_noted:
            if reason is None:
                log.info("reads go to the read replica (lag %.1f s)", self.verdict.lag_s or 0.0)
            else:
                log.warning(
                    "reads go to the primary: read replica %s (lag %s s, allowed %.1f s)",
                    reason,
                    "unknown" if self.verdict.lag_s is None else f"{self.verdict.lag_s:.1f}",
                    self.verdict.max_lag_s,
                )
            self._last_noted = reason

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the PostgreSQL pools are closed")

    async def close(self, deadline: float) -> None:
        """Close both pools, each within `deadline` seconds, then terminate what is left."""
        self._closed = True
        probe, self._probe = self._probe, None
        if probe is not None:
            try:
                await asyncio.wait_for(probe.close(), deadline)
            except Exception:
                probe.terminate()
        for what, pool in (("primary", self._primary), ("read replica", self._replica)):
            if pool is None:
                continue
            try:
                await asyncio.wait_for(pool.close(), deadline)
            except Exception as error:
                log.warning(
                    "PostgreSQL %s pool not closed within %.0f s (%r); connections terminated",
                    what,
                    deadline,
                    error,
                )
                pool.terminate()
        self._primary = self._replica = None

    async def __aenter__(self) -> Databases:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        await self.close(deadline=5.0)
