"""The one sink contract: a flow's sink writes a whole batch, idempotently by key, and is
closed by the runtime once nothing can write to it any more."""

from __future__ import annotations

from typing import Protocol, TypeVar, runtime_checkable

T_contra = TypeVar("T_contra", contravariant=True)


class SinkBackpressure(Exception):  # noqa: N818 - a signal, not a failure
    """Raised by `write` when the destination cannot take the batch now (it is down or full).
    The runtime pauses the flow's partitions, waits `retry_after` seconds and writes the same
    batch again; nothing is committed meanwhile."""

    def __init__(self, retry_after: float, reason: str) -> None:
        super().__init__(f"{reason}; retrying in {retry_after:.1f} s")
        self.retry_after = retry_after
        self.reason = reason


class SinkStopping(Exception):  # noqa: N818 - a signal, not a failure
    """Raised by `write` when it gives up because the worker is stopping. The runtime abandons
    the batch uncommitted (it is read again after the restart) and takes no further batch."""


class Sink(Protocol[T_contra]):
    """`write` stores a batch. It may be called again with the same batch (after a failure or
    a rebalance), so what it stores is keyed: a second write of one item changes nothing.
    `close` releases what the sink holds (its pool, its client); it is called once, after the
    flow's loop and timers have ended."""

    async def write(self, batch: T_contra) -> None: ...

    async def close(self) -> None: ...


@runtime_checkable
class PreparingSink(Sink[T_contra], Protocol[T_contra]):
    """A sink that can start on a batch while the batch before it is still being written.
    Under load the runner hands a full batch to `prepare` as soon as it is full, then to
    `write` once the batch before it is written, the same object both times. `prepare` does
    only what needs nothing of the write before it and shows nothing to anyone else (staging
    rows in a transaction not yet committed, say). It never raises: what it could not do,
    `write` does. A prepared batch that is not written after all (a rebalance took some or all
    of its partitions, the write was abandoned) goes to `discard`; `close` releases whatever is
    still prepared."""

    async def prepare(self, batch: T_contra) -> None: ...

    async def discard(self, batch: T_contra) -> None:
        """Release what `prepare` holds for `batch`, if anything (its write took it already)."""
        ...
