"""The express hand-off: in a worker that hosts both decide and the execution lanes, an urgent
or normal request is executed as soon as decide has committed it in Redis, without waiting
for its lane to read it back from Kafka. That saves a Kafka hop (a fetch, and the produce
before it) on every such request.

The lane message is still sent, and it is what a crash falls back on. Express runs a
request only when this worker's lane owns the partition that message goes to. When the lane
reads the message, it finds the call here and waits for it rather than calling again.

- **Crash.** After a crash the message is read again by whoever owns the partition. It is
  skipped by its done mark, or run again if the call had not finished.
- **Rebalance.** A partition is given up only after its calls here finished (within the
  grace), so its next owner finds their done marks.
- **Calls in flight.** A request runs here only while the calls in flight for its lane (run
  here, and made by the lane itself) are fewer than the lane's concurrency. The lane may
  start calls of its own after that, up to its concurrency less the slots its waits for
  calls here hold, so a lane's calls exceed its concurrency only by calls here it has not
  read yet.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from aiokafka import TopicPartition

from agents.router.decide import LANE_TOPICS, Emit
from runtime.metrics import EXPRESSED
from runtime.partitioner import partition_of
from runtime.source import Received, Record
from schemas.events import Lane, RoutedRequest

log = logging.getLogger(__name__)

Execute = Callable[[Received[RoutedRequest]], Awaitable[None]]

# A finished call the lane never asked about (its message went to a new owner) is forgotten
# after this long.
FORGET_AFTER_S = 600.0


@dataclass
class _Call:
    partition: TopicPartition
    task: asyncio.Future[None]
    started: float


class Express:
    """Runs decided requests of `limits`' lanes at once (see the module's docstring).
    `limits`: the most calls in flight here, by lane."""

    def __init__(self, execute: Execute, limits: Mapping[Lane, int], grace_s: float) -> None:
        self.execute = execute
        self.limits = {LANE_TOPICS[lane].name: limit for lane, limit in limits.items()}
        self._counted = {
            LANE_TOPICS[lane].name: EXPRESSED.labels(lane=lane.value) for lane in limits
        }
        self.grace_s = grace_s
        self._partitions: dict[str, int] = {}  # a lane topic's partition count
        self._owned: set[TopicPartition] = set()
        self._calls: OrderedDict[str, _Call] = OrderedDict()
        # Calls in flight by lane topic: run here, and made by the lane itself.
        self._in_flight = dict.fromkeys(self.limits, 0)
        self._lane_calls = dict.fromkeys(self.limits, 0)

    # -- the lanes' consumers tell what they own (`runtime.concurrent.Ownership`) ------------

    def assigned(self, partitions: frozenset[TopicPartition], counts: Mapping[str, int]) -> None:
        self._partitions.update({t: n for t, n in counts.items() if t in self.limits})
        self._owned |= {tp for tp in partitions if tp.topic in self.limits}

    async def revoked(self, partitions: frozenset[TopicPartition]) -> None:
        """Let the calls for these partitions finish (within the grace) before they move."""
        self._owned -= partitions
        going = {rid: c for rid, c in self._calls.items() if c.partition in partitions}
        running = [c.task for c in going.values() if not c.task.done()]
        if running:
            _, unfinished = await asyncio.wait(running, timeout=self.grace_s)
            if unfinished:
                log.warning(
                    "router: %d expressed call(s) still running as their partitions move; "
                    "the new owner may call them again",
                    len(unfinished),
                )
        for request_id in going:
            self._calls.pop(request_id, None)

    # -- decide offers what it sent; the lanes ask ------------------------------------------

    def offer(self, emits: list[Emit]) -> None:
        """Start each of `emits` decided now (committed in Redis just now, so `execute` need
        not look up a done mark) whose lane partition is owned here, while the lane has room.
        Offered before the send, so no lane here reads a message before it is known. A call
        that finishes before its message is acknowledged is safe: a crash re-sends the stored
        decision, and its lane then finds the done mark."""
        for emit in emits:
            topic = emit.spec.name
            limit = self.limits.get(topic)
            count = self._partitions.get(topic)
            # Re-sent decisions (a redelivered batch) take the lane's path: they may have run.
            routed = emit.decided_now
            if routed is None or limit is None or not count:
                continue
            if self._in_flight[topic] + self._lane_calls[topic] >= limit:
                continue  # the lane's path: the lane bounds its own calls
            partition = TopicPartition(topic, partition_of(emit.key, count))
            if partition not in self._owned:
                continue
            request_id = routed.request.request_id
            if request_id in self._calls:
                continue  # a batch written again after its send failed: the first call answers
            # No offset yet: a dead letter for this call says -1.
            origin = Record(topic, partition.partition, -1, emit.key, emit.value, emit.headers)
            self._in_flight[topic] += 1
            self._counted[topic].inc()
            task = asyncio.ensure_future(self.execute(Received(routed, origin)))
            task.add_done_callback(functools.partial(self._finished, topic))
            self._calls[request_id] = _Call(partition, task, time.monotonic())
        self._forget_old()

    async def taken(self, request_id: str) -> bool:
        """For the lane reading `request_id`'s message: True once a call started here has
        finished (the lane then skips it); False when none was started here."""
        call = self._calls.get(request_id)
        if call is None:
            return False
        try:
            # Shielded: a lane stopping cancels its wait, not the call.
            await asyncio.shield(call.task)
        finally:
            # Kept until the call ended, so a rebalance meanwhile waits for it too.
            if self._calls.get(request_id) is call:
                del self._calls[request_id]
        return True

    def or_run(self, execute: Execute) -> Execute:
        """A lane's handler: wait for the call started here, or `execute` the request."""

        async def handle(job: Received[RoutedRequest]) -> None:
            if await self.taken(job.event.request.request_id):
                return
            topic = job.origin.topic
            counted = topic in self._lane_calls
            if counted:
                self._lane_calls[topic] += 1
            try:
                await execute(job)
            finally:
                if counted:
                    self._lane_calls[topic] -= 1

        return handle

    async def stop(self) -> None:
        """At a lane's stop, once it left its group: calls still running get the grace, then
        are cancelled (their lane messages run again after the restart). Nothing more runs
        here: decide may still be deciding."""
        self._owned.clear()
        running = [c.task for c in self._calls.values() if not c.task.done()]
        if not running:
            return
        _, unfinished = await asyncio.wait(running, timeout=self.grace_s)
        for task in unfinished:
            task.cancel()
        if unfinished:
            await asyncio.wait(unfinished, timeout=1.0)
            log.info("router: %d expressed call(s) cancelled at stop", len(unfinished))

    def _finished(self, topic: str, _: asyncio.Future[None]) -> None:
        self._in_flight[topic] -= 1

    def _forget_old(self) -> None:
        cutoff = time.monotonic() - FORGET_AFTER_S
        while self._calls:
            request_id, call = next(iter(self._calls.items()))
            if call.started > cutoff or not call.task.done():
                return
            del self._calls[request_id]
