"""The one checkpoint order: every sink has written the batch, then the producer is flushed
(what the sinks published is acknowledged), then the batch's offsets are committed. A failure
at any step leaves the offsets where they were, so the batch is read and written again; the
sinks are idempotent by key, so that second write changes only what the first did not store.
The committer is handed the flush: it may flush and commit after `run` has returned, in that
order, while the next batch is written."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Generic, TypeVar

from aiokafka import TopicPartition

from runtime import tracing
from runtime.sink import Sink

log = logging.getLogger(__name__)

T = TypeVar("T")

Flush = Callable[[], Awaitable[None]]
# Commits the offsets once the flush it is handed has returned.
Commit = Callable[[Mapping[TopicPartition, int], Flush], Awaitable[bool]]


async def nothing_to_flush() -> None:
    """For a flow whose sinks wait for every send they make."""


class Checkpoint(Generic[T]):
    """One batch on its way to the sinks. `run` may be called again after it raised: the sinks
    that already wrote the batch are not asked again."""

    def __init__(
        self,
        items: T,
        offsets: Mapping[TopicPartition, int],
        sinks: Sequence[Sink[T]],
        flush: Flush,
        commit: Commit,
    ) -> None:
        self.items = items
        self.offsets = offsets
        self.sinks = sinks
        self.flush = flush
        self.commit = commit
        self.written = 0  # sinks that have written the batch

    async def run(self) -> bool:
        """Write, then flush and commit. False when the commit was refused (logged by `commit`)."""
        while self.written < len(self.sinks):
            sink = self.sinks[self.written]
            with tracing.tracer().start_as_current_span(f"write {type(sink).__name__}"):
                await sink.write(self.items)
            self.written += 1
        return await self.commit(self.offsets, self.flush)
