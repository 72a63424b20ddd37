"""What a flow reads and how: its topics, its consumer group and the size and pace of its
batches. One frozen object per flow, so the runtime builds every consumer the same way."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor

from runtime.kafka import group_id
from runtime.settings import ResolvedSettings


class Assignor(StrEnum):
    """How the group shares partitions. `RANGE` gives partition p of every subscribed topic to
    one member: a flow whose topics are keyed alike owns a key's inputs on all of them."""

    ROUND_ROBIN = "roundrobin"
    RANGE = "range"


_ASSIGNORS = {
    Assignor.ROUND_ROBIN: RoundRobinPartitionAssignor,
    Assignor.RANGE: RangePartitionAssignor,
}


@dataclass(frozen=True)
class ConsumerSpec:
    """`flow` names the group (`<app_id>.<flow>`), the logs and the metrics."""

    flow: str
    topics: tuple[str, ...]
    max_batch: int = 1000
    # How long the broker may hold a fetch open waiting for data ...
    fetch_wait_ms: int = 500
    # ... until this much has gathered. 1: answered as soon as any record is there, one fetch
    # per record at low rates. More: a flow whose latency matters less reads low traffic in
    # a few fetches a second (each a send and a response to handle) rather than one a record.
    fetch_min_bytes: int = 1
    # How long one poll waits for records when none are buffered.
    poll_ms: int = 500
    # A batch stays open this long after its first record (a coalescing window); 0: a batch is
    # what one poll returns. Either way it keeps filling, up to `max_batch`, while the batch
    # before it is being written. A flow with a `window` of its own decides instead.
    window_seconds: float = 0.0
    assignor: Assignor = Assignor.ROUND_ROBIN
    # How long a stopping worker may spend finishing the batch in hand, and then each of
    # flushing and closing; what is not finished by then is left uncommitted.
    stop_seconds: float = 15.0
    # The `agent` label of each topic's counts, where it is not the flow's name.
    agent_labels: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.topics:
            raise ValueError(f"flow {self.flow!r} reads no topic")
        if self.max_batch < 1:
            raise ValueError(f"flow {self.flow!r}: max_batch must be at least 1")

    def group(self, settings: ResolvedSettings) -> str:
        return self.group_of(settings.base.app_id)

    def group_of(self, app_id: str) -> str:
        """The group in the workers of `app_id` (what `group` gives with their settings)."""
        return group_id(app_id, self.flow)

    def agent_of(self, topic: str) -> str:
        return self.agent_labels.get(topic, self.flow)

    def consumer_options(self) -> dict[str, Any]:
        """The options `runtime.kafka.consumer` takes on top of the deployment's."""
        return {
            "fetch_max_wait_ms": self.fetch_wait_ms,
            "fetch_min_bytes": self.fetch_min_bytes,
            "max_poll_records": self.max_batch,
            "partition_assignment_strategy": (_ASSIGNORS[self.assignor],),
        }
