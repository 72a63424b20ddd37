"""The one loop under every flow, run in-process: the checkpoint order, decoding into events
or dead letters, backpressure, rebalances and the bounded shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError

from runtime.checkpoint import Checkpoint, Flush
from runtime.flow import FixedWindow, Flow, FlowRunner, Timer
from runtime.sink import SinkBackpressure, SinkStopping
from runtime.source import Received, Record, Rejected
from runtime.spec import ConsumerSpec
from runtime.testing import DeadLetterList, ListConsumer, ListSink, records, run_flow

TOPIC = "numbers"


def decode_int(record: Record) -> int | Rejected:
    try:
        return int(record.value or b"")
    except ValueError:
        return Rejected("json", f"not a number: {record.value!r}")


def values(batch: list[Received[int]]) -> list[int]:
    return [r.event for r in batch]


def flow(
    sinks: Sequence[object],
    dead: DeadLetterList | None = None,
    max_batch: int = 100,
    **options: object,
) -> Flow[int, list[int]]:
    return Flow(
        spec=ConsumerSpec("numbers", (TOPIC,), max_batch=max_batch, stop_seconds=2),
        decode=decode_int,
        dead_letter=dead or DeadLetterList(),
        handle=values,
        sinks=sinks,  # type: ignore[arg-type]
        **options,  # type: ignore[arg-type]
    )


def record_commits(consumer: ListConsumer, order: list[str]) -> None:
    """Each commit of `consumer` appends "commit <offset of the topic's partition 0>"."""
    original = consumer.commit

    async def commit(offsets: Mapping[TopicPartition, int]) -> None:
        order.append(f"commit {offsets[TopicPartition(TOPIC, 0)]}")
        await original(offsets)

    consumer.commit = commit  # type: ignore[method-assign]


async def drained_then_stopped(
    runner: FlowRunner[Any, Any], consumer: ListConsumer, running: asyncio.Task[None]
) -> None:
    """Wait until every record is read and written, then stop the runner."""
    async with asyncio.timeout(5):
        while not (consumer.drained and runner.idle):  # noqa: ASYNC110
            await asyncio.sleep(0.005)
    await runner.stop()
    await running


async def test_valid_events_reach_the_sink_bad_ones_the_dead_letters_in_offset_order() -> None:
    sink: ListSink[list[int]] = ListSink()
    dead = DeadLetterList()
    consumer = ListConsumer(records(TOPIC, [b"1", b"x", b"2", None, b"3"]))

    await run_flow(flow([sink], dead), consumer)

    assert [v for batch in sink.batches for v in batch] == [1, 2, 3]
    assert [(d.record.offset, d.kind) for d in dead.letters] == [(1, "json"), (3, "json")]
    assert consumer.committed == {TopicPartition(TOPIC, 0): 5}
    assert sink.closed


async def test_batches_are_written_in_order_and_each_committed_after_its_write() -> None:
    order: list[str] = []

    class Recording(ListSink[list[int]]):
        async def write(self, batch: list[int]) -> None:
            await asyncio.sleep(0.01)
            order.append(f"write {batch[-1]}")
            await super().write(batch)

    consumer = ListConsumer(records(TOPIC, [str(i).encode() for i in range(10)]))
    record_commits(consumer, order)
    await run_flow(flow([Recording()], max_batch=3), consumer)

    assert order == [x for i in (2, 5, 8, 9) for x in (f"write {i}", f"commit {i + 1}")]


async def test_commit_behind_writes_the_next_batch_while_a_commit_is_in_flight() -> None:
    """With `commit_behind`, batch 2 is written while batch 1's commit waits at the broker;
    the commits still go in order, each after its own write, and a revocation waits for the
    commit in flight."""
    order: list[str] = []
    release = asyncio.Event()
    a = TopicPartition(TOPIC, 0)

    class Recording(ListSink[list[int]]):
        async def write(self, batch: list[int]) -> None:
            order.append(f"write {batch[-1]}")
            await super().write(batch)

    consumer = ListConsumer(records(TOPIC, [str(i).encode() for i in range(6)]))
    original = consumer.commit

    async def commit(offsets: Mapping[TopicPartition, int]) -> None:
        order.append(f"commit {offsets[a]} sent")
        await release.wait()  # the broker answers when the test says
        await original(offsets)
        order.append(f"commit {offsets[a]} done")

    consumer.commit = commit  # type: ignore[method-assign]
    runner: FlowRunner[int, list[int]] = FlowRunner(
        flow([Recording()], max_batch=3, commit_behind=True), consumer
    )
    await runner.start()
    running = asyncio.create_task(runner.run())
    for _ in range(100):
        if "write 5" in order:
            break
        await asyncio.sleep(0.01)
    assert order == ["write 2", "commit 3 sent", "write 5"], "batch 2 waited for the commit"
    assert not runner.idle and consumer.committed == {}
    revoking = asyncio.create_task(consumer.revoke([a]))
    await asyncio.sleep(0.05)
    assert not revoking.done(), "a revocation waits for the commit in flight"
    release.set()
    await revoking
    await runner.stop()
    await running

    assert order == [
        "write 2",
        "commit 3 sent",
        "write 5",
        "commit 3 done",
        "commit 6 sent",
        "commit 6 done",
    ]
    assert consumer.committed == {a: 6}


async def test_commit_behind_flushes_behind_the_writes_and_before_each_commit() -> None:
    """The flush joins the commit behind the writes: batch 2 is written while batch 1's
    acknowledgements are awaited, and each batch's offsets are committed after its flush."""
    order: list[str] = []
    acknowledged = asyncio.Event()
    a = TopicPartition(TOPIC, 0)

    class Recording(ListSink[list[int]]):
        async def write(self, batch: list[int]) -> None:
            order.append(f"write {batch[-1]}")

    async def flush() -> None:
        order.append("flush")
        await acknowledged.wait()  # the broker acknowledges when the test says

    consumer = ListConsumer(records(TOPIC, [str(i).encode() for i in range(6)]))
    record_commits(consumer, order)
    runner: FlowRunner[int, list[int]] = FlowRunner(
        flow([Recording()], max_batch=3, commit_behind=True, flush=flush), consumer
    )
    await runner.start()
    running = asyncio.create_task(runner.run())
    for _ in range(100):
        if "write 5" in order:
            break
        await asyncio.sleep(0.01)
    assert order == ["write 2", "flush", "write 5"], "batch 2 waited for batch 1's flush"
    assert consumer.committed == {}
    acknowledged.set()
    await runner.stop()
    await running
    assert order[:6] == ["write 2", "flush", "write 5", "commit 3", "flush", "commit 6"]
    assert consumer.committed == {a: 6}


async def test_commits_behind_queued_close_together_go_out_as_one() -> None:
    """Fifty one-record batches whose commits queue behind a slow coordinator: fewer commits
    than batches, in order, the last at the end of the partition."""
    a = TopicPartition(TOPIC, 0)
    consumer = ListConsumer(records(TOPIC, [str(i).encode() for i in range(50)]))
    original = consumer.commit

    async def slow_commit(offsets: Mapping[TopicPartition, int]) -> None:
        await asyncio.sleep(0.02)
        await original(offsets)

    consumer.commit = slow_commit  # type: ignore[method-assign]
    sink: ListSink[list[int]] = ListSink()
    await run_flow(flow([sink], max_batch=1, commit_behind=True), consumer)

    assert len(sink.batches) == 50
    committed = [c[a] for c in consumer.commits]
    assert committed == sorted(committed) and committed[-1] == 50
    assert len(committed) < 25, f"{len(committed)} commits for 50 batches"


async def test_a_flush_behind_that_fails_ends_the_flow_with_nothing_committed_past_it() -> None:
    """Sends that may be lost stop the flow with the error: neither their batch's offsets nor
    any later batch's are committed, so all of them are read again after the restart."""
    written: list[int] = []
    lost = ConnectionError("the broker did not acknowledge")

    class Recording(ListSink[list[int]]):
        async def write(self, batch: list[int]) -> None:
            written.append(batch[-1])

    async def flush() -> None:
        if written[0] == 2:
            await asyncio.sleep(0.05)  # batch 2 is written meanwhile
            raise lost

    consumer = ListConsumer(records(TOPIC, [str(i).encode() for i in range(6)]))
    runner: FlowRunner[int, list[int]] = FlowRunner(
        flow([Recording()], max_batch=3, commit_behind=True, flush=flush), consumer
    )
    await runner.start()
    with pytest.raises(ConnectionError) as raised:
        await asyncio.wait_for(runner.run(), 5)
    await runner.stop()
    assert raised.value is lost
    assert written == [2, 5]
    assert consumer.committed == {}


async def test_commit_behind_commits_in_line_while_the_window_is_held_open() -> None:
    """Under load (a window held open) the next batch keeps filling during the commit, as
    without `commit_behind`, so a burst merges as much."""
    order: list[str] = []
    release = asyncio.Event()

    class Recording(ListSink[list[int]]):
        async def write(self, batch: list[int]) -> None:
            order.append(f"write {batch[-1]}")
            await super().write(batch)

    consumer = ListConsumer(records(TOPIC, [str(i).encode() for i in range(6)]))
    original = consumer.commit

    async def commit(offsets: Mapping[TopicPartition, int]) -> None:
        order.append("commit sent")
        await release.wait()
        await original(offsets)

    consumer.commit = commit  # type: ignore[method-assign]
    held_open = FixedWindow(0.01)
    runner: FlowRunner[int, list[int]] = FlowRunner(
        flow([Recording()], max_batch=3, commit_behind=True, window=held_open), consumer
    )
    await runner.start()
    running = asyncio.create_task(runner.run())
    await asyncio.sleep(0.2)
    assert order == ["write 2", "commit sent"], "the next batch waits for the commit"
    release.set()
    await asyncio.sleep(0.1)
    await runner.stop()
    await running
    assert order == ["write 2", "commit sent", "write 5", "commit sent"]
    assert consumer.committed == {TopicPartition(TOPIC, 0): 6}


async def test_a_sink_that_fails_means_nothing_is_committed() -> None:
    class Broken(ListSink[list[int]]):
        async def write(self, batch: list[int]) -> None:
            raise KeyError("a bug in the sink")

    consumer = ListConsumer(records(TOPIC, [b"1", b"2"]))
    with pytest.raises(KeyError):
        await run_flow(flow([Broken()]), consumer)
    assert consumer.committed == {}


async def test_sinks_then_producer_flush_then_commit() -> None:
    order: list[str] = []

    class Named(ListSink[list[int]]):
        def __init__(self, name: str) -> None:
            super().__init__()
            self.name = name

        async def write(self, batch: list[int]) -> None:
            order.append(self.name)

    async def flush() -> None:
        order.append("flush")

    async def commit(offsets: object, flush: Flush) -> bool:
        await flush()
        order.append("commit")
        return True

    done = await Checkpoint([1], {}, [Named("postgres"), Named("redis")], flush, commit).run()
    assert done
    assert order == ["postgres", "redis", "flush", "commit"]


async def test_a_retried_checkpoint_does_not_ask_a_sink_that_already_wrote() -> None:
    first, second = ListSink[list[int]](), ListSink[list[int]]()
    failures = [ConnectionError("redis is down")]

    class Flaky(ListSink[list[int]]):
        async def write(self, batch: list[int]) -> None:
            if failures:
                raise failures.pop()
            await second.write(batch)

    async def commit(offsets: object, flush: Flush) -> bool:
        return True

    checkpoint = Checkpoint([1], {}, [first, Flaky()], _no_flush, commit)
    with pytest.raises(ConnectionError):
        await checkpoint.run()
    assert await checkpoint.run()
    assert first.batches == [[1]]
    assert second.batches == [[1]]


async def _no_flush() -> None:
    return None


async def test_a_refused_commit_is_logged_and_the_flow_goes_on() -> None:
    sink: ListSink[list[int]] = ListSink()
    consumer = ListConsumer(records(TOPIC, [b"1", b"2"]))
    consumer.refuse_commits = True

    await run_flow(flow([sink]), consumer)

    assert [v for batch in sink.batches for v in batch] == [1, 2]
    assert consumer.committed == {}


async def test_backpressure_pauses_the_partitions_and_writes_the_batch_again() -> None:
    sink: ListSink[list[int]] = ListSink()
    pushed = [SinkBackpressure(0.05, "redis is down")]
    paused_while_pushed_back: list[bool] = []
    consumer = ListConsumer(records(TOPIC, [b"1", b"2"]))

    class Pushing(ListSink[list[int]]):
        async def write(self, batch: list[int]) -> None:
            if pushed:
                raise pushed.pop()
            paused_while_pushed_back.append(bool(consumer.paused()))
            await sink.write(batch)

    runner = await run_flow(flow([Pushing()], max_batch=2), consumer)

    assert sink.batches == [[1, 2]]
    assert paused_while_pushed_back == [True]
    assert consumer.committed == {TopicPartition(TOPIC, 0): 2}
    assert not runner.paused and not consumer.paused()


async def test_records_of_a_revoked_partition_are_left_to_their_next_owner() -> None:
    written: list[list[int]] = []
    revoked: list[frozenset[TopicPartition]] = []
    gate = asyncio.Event()
    a, b = TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)
    consumer = ListConsumer([*records(TOPIC, [b"1", b"2"], 0), *records(TOPIC, [b"10", b"20"], 1)])

    class Slow(ListSink[list[int]]):
        async def write(self, batch: list[int]) -> None:
            await gate.wait()
            written.append(batch)

    class Keeper:
        def assigned(self, partitions: frozenset[TopicPartition], counts: object) -> None:
            pass

        async def revoked(self, partitions: frozenset[TopicPartition]) -> None:
            revoked.append(partitions)

    runner: FlowRunner[int, list[int]] = FlowRunner(
        flow([Slow()], max_batch=1, rebalance=Keeper()), consumer
    )
    await runner.start()
    running = asyncio.create_task(runner.run())
    await asyncio.sleep(0.05)  # the first batch (one record of partition 0) is being written
    revoking = asyncio.create_task(consumer.revoke([b]))
    await asyncio.sleep(0.05)
    assert not revoking.done(), "a revocation waits for the batch being written"
    gate.set()
    await revoking
    await asyncio.sleep(0.1)
    await runner.stop()
    await running

    assert revoked[0] == frozenset({b})
    assert [v for batch in written for v in batch] == [1, 2]
    assert b not in consumer.committed
    assert consumer.committed[a] == 2


async def test_a_partition_given_back_while_a_batch_fills_loses_no_record() -> None:
    """An eager rebalance takes every partition away and gives most back; the position goes
    back to the committed offset. What the open batch read before is read again, and what
    comes after is written, not dropped with it and then committed past."""
    tp = TopicPartition(TOPIC, 0)
    sink: ListSink[list[int]] = ListSink()
    consumer = ListConsumer(records(TOPIC, [str(n).encode() for n in range(40)]))
    # A batch stays open for its window (as the invalidation flow's does), so the records
    # read after the rebalance join the ones read before it.
    windowed = Flow(
        spec=ConsumerSpec("numbers", (TOPIC,), stop_seconds=2, window_seconds=0.3),
        decode=decode_int,
        dead_letter=DeadLetterList(),
        handle=values,
        sinks=[sink],
    )
    runner: FlowRunner[int, list[int]] = FlowRunner(windowed, consumer)
    await runner.start()
    running = asyncio.create_task(runner.run())
    await asyncio.sleep(0.05)  # 0-39 read into the open batch, nothing written yet
    await consumer.rebalance()
    consumer.append(records(TOPIC, [str(n).encode() for n in range(40, 50)]))
    async with asyncio.timeout(10):
        while not (consumer.drained and runner.idle):  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    await runner.stop()
    await running

    written = [v for batch in sink.batches for v in batch]
    assert sorted(set(written)) == list(range(50)), sorted(set(range(50)) - set(written))
    assert consumer.committed[tp] == 50


async def test_a_stop_ends_a_long_backpressure_pause_at_once() -> None:
    """A CDN outage pushes back for up to 30 s between attempts; a stop must not wait it out."""
    writes: list[list[int]] = []

    class Down(ListSink[list[int]]):
        async def write(self, batch: list[int]) -> None:
            writes.append(batch)
            raise SinkBackpressure(60.0, "cdn is down")

    consumer = ListConsumer(records(TOPIC, [b"1"]))
    runner: FlowRunner[int, list[int]] = FlowRunner(flow([Down()]), consumer)
    await runner.start()
    running = asyncio.create_task(runner.run())
    await asyncio.sleep(0.05)
    assert writes == [[1]], "the batch was tried once and is now paused"
    started = asyncio.get_running_loop().time()
    await runner.stop()
    await running

    assert asyncio.get_running_loop().time() - started < 1.0
    assert writes == [[1]], "a stop does not try the batch again"
    assert consumer.committed == {}


async def test_a_batch_not_written_by_the_stop_deadline_is_abandoned_uncommitted() -> None:
    closed: list[str] = []

    class Stuck(ListSink[list[int]]):
        async def write(self, batch: list[int]) -> None:
            await asyncio.Event().wait()

        async def close(self) -> None:
            closed.append("sink")

    consumer = ListConsumer(records(TOPIC, [b"1"]))
    runner: FlowRunner[int, list[int]] = FlowRunner(flow([Stuck()]), consumer)
    await runner.start()
    running = asyncio.create_task(runner.run())
    await asyncio.sleep(0.05)
    await runner.stop()
    await running

    assert consumer.committed == {}
    assert closed == ["sink"]
    assert consumer.stopped


async def test_a_batch_waiting_behind_one_abandoned_at_the_stop_deadline_is_not_committed() -> None:
    """The write abandoned at the deadline leaves its records uncommitted; the full batch that
    waited for it must not be written and committed past them."""

    class StuckOnTheFirst(ListSink[list[int]]):
        async def write(self, batch: list[int]) -> None:
            if batch[0] == 0:
                await asyncio.Event().wait()
            await super().write(batch)

    sink = StuckOnTheFirst()
    consumer = ListConsumer(records(TOPIC, [str(i).encode() for i in range(4)]))
    runner: FlowRunner[int, list[int]] = FlowRunner(flow([sink], max_batch=2), consumer)
    await runner.start()
    running = asyncio.create_task(runner.run())
    await asyncio.sleep(0.05)  # [0, 1] stuck in its write, [2, 3] full and waiting for it
    await runner.stop()
    await running

    assert sink.batches == []
    assert consumer.committed == {}


async def test_a_sink_giving_up_at_stop_leaves_its_batch_and_every_later_one_uncommitted() -> None:
    """Committing a later batch would carry the commit past the one left unwritten."""
    calls: list[list[int]] = []

    class GivesUpOnce(ListSink[list[int]]):
        async def write(self, batch: list[int]) -> None:
            calls.append(batch)
            if len(calls) == 1:
                raise SinkStopping("the worker is stopping")
            await super().write(batch)

    sink = GivesUpOnce()
    consumer = ListConsumer(records(TOPIC, [b"1", b"2", b"3"]))
    runner = await run_flow(flow([sink], max_batch=1), consumer)

    assert calls == [[1]]
    assert consumer.committed == {}
    assert sink.closed and runner.idle


async def test_timers_end_before_the_sinks_close() -> None:
    events: list[str] = []

    class Closing(ListSink[list[int]]):
        async def close(self) -> None:
            events.append("close")

    async def tick() -> None:
        events.append("tick")

    consumer = ListConsumer(records(TOPIC, [b"1"]))
    runner: FlowRunner[int, list[int]] = FlowRunner(
        flow([Closing()], timers=[Timer("tick", 0.01, tick)]), consumer
    )
    await runner.start()
    running = asyncio.create_task(runner.run())
    await asyncio.sleep(0.1)
    await runner.stop()
    await running
    await asyncio.sleep(0.05)

    assert events[-1] == "close"
    assert events.count("close") == 1
    assert "tick" in events


async def test_a_second_stop_returns_only_once_the_first_is_done() -> None:
    """The worker stops a flow at SIGTERM and again when Faust stops its services: the second
    caller must not go on (closing the pools) while the first is still writing."""
    gate = asyncio.Event()

    class Slow(ListSink[list[int]]):
        async def close(self) -> None:
            await gate.wait()
            await super().close()

    sink = Slow()
    runner: FlowRunner[int, list[int]] = FlowRunner(flow([sink]), ListConsumer([]))
    await runner.start()
    running = asyncio.create_task(runner.run())
    first = asyncio.create_task(runner.stop())
    await asyncio.sleep(0.05)
    second = asyncio.create_task(runner.stop())
    await asyncio.sleep(0.05)
    assert not second.done(), "the second stop returned while the first was closing the sink"
    gate.set()
    await asyncio.wait_for(asyncio.gather(first, second, running), 5)
    assert sink.closed


async def test_a_batch_waiting_on_the_write_before_is_handed_over_as_that_write_ends() -> None:
    """Batch 2 (open, not full) waits for batch 1's write on one poll, which that write ends:
    it is written at once after it, and the consumer is not polled over and over meanwhile."""
    release = asyncio.Event()
    written_at: dict[int, float] = {}

    class Held(ListSink[list[int]]):
        async def write(self, batch: list[int]) -> None:
            if batch[0] == 0:
                await release.wait()
            written_at[batch[0]] = asyncio.get_running_loop().time()
            await super().write(batch)

    class Broker(ListConsumer):
        """An empty poll lasts its whole timeout, as a broker's does."""

        polls = 0

        async def getmany(self, *, timeout_ms: int, max_records: int) -> dict[Any, list[Any]]:
            self.polls += 1
            taken = await super().getmany(timeout_ms=0, max_records=max_records)
            if not taken:
                await asyncio.sleep(timeout_ms / 1000)
            return taken

    sink = Held()
    consumer = Broker(records(TOPIC, [b"0", b"1", b"2"]))
    runner: FlowRunner[int, list[int]] = FlowRunner(flow([sink], max_batch=2), consumer)
    await runner.start()
    running = asyncio.create_task(runner.run())
    await asyncio.sleep(0.2)
    polls_while_written = consumer.polls
    released_at = asyncio.get_running_loop().time()
    release.set()
    async with asyncio.timeout(5):
        while 2 not in written_at:  # noqa: ASYNC110
            await asyncio.sleep(0.005)
    await runner.stop()
    await running

    assert sink.batches == [[0, 1], [2]]
    assert polls_while_written <= 4, f"polled {polls_while_written} times during one write"
    assert written_at[2] - released_at < 0.1, "batch 2 waited for its poll to time out"


async def test_a_flow_s_own_window_decides_when_a_batch_is_due() -> None:
    """The runner reports each poll's records to the flow's window and hands a batch over only
    once the window says it is due (the invalidation flow's adaptive coalescing)."""

    class Held:
        def __init__(self) -> None:
            self.arrivals: list[int] = []
            self.open = True

        def arrived(self, records: int, now: float) -> None:
            self.arrivals.append(records)

        def time_left(self, opened_at: float, now: float) -> float:
            return 60.0 if self.open else 0.0

    window = Held()
    sink: ListSink[list[int]] = ListSink()
    consumer = ListConsumer(records(TOPIC, [str(n).encode() for n in range(30)]))
    runner: FlowRunner[int, list[int]] = FlowRunner(flow([sink], window=window), consumer)
    await runner.start()
    running = asyncio.create_task(runner.run())
    await asyncio.sleep(0.1)
    assert sink.batches == [], "held open: nothing written"
    assert sum(window.arrivals) == 30
    window.open = False
    async with asyncio.timeout(5):
        while not sink.batches:  # noqa: ASYNC110
            await asyncio.sleep(0.005)
    await runner.stop()
    await running

    assert sink.batches == [list(range(30))]
    assert consumer.committed == {TopicPartition(TOPIC, 0): 30}


async def test_a_runner_is_assigned_from_its_group_s_assignment_until_a_rebalance_revokes() -> None:
    consumer = ListConsumer(records(TOPIC, [b"1"]))
    runner: FlowRunner[int, list[int]] = FlowRunner(flow([ListSink()]), consumer)
    assert not runner.assigned
    await runner.start()
    assert runner.assigned
    await consumer.listener.on_partitions_revoked({TopicPartition(TOPIC, 0)})
    assert not runner.assigned, "between a revocation and the next assignment: rebalancing"
    await consumer.listener.on_partitions_assigned(set())
    assert runner.assigned, "a member given no partition has joined all the same"
    await runner.stop()


async def test_assigned_partitions_start_where_the_flow_says() -> None:
    sink: ListSink[list[int]] = ListSink()
    consumer = ListConsumer(records(TOPIC, [b"1", b"2", b"3", b"4"]))
    asked: list[frozenset[TopicPartition]] = []

    async def starts(partitions: frozenset[TopicPartition]) -> dict[TopicPartition, int]:
        asked.append(partitions)
        return {TopicPartition(TOPIC, 0): 2}

    await run_flow(flow([sink], starts=starts), consumer)

    assert asked == [frozenset({TopicPartition(TOPIC, 0)})]
    assert [v for batch in sink.batches for v in batch] == [3, 4]
    assert consumer.committed == {TopicPartition(TOPIC, 0): 4}


async def test_start_offsets_that_cannot_be_read_leave_the_partitions_where_they_were(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sink: ListSink[list[int]] = ListSink()
    consumer = ListConsumer(records(TOPIC, [b"1", b"2", b"3"]))

    async def starts(partitions: frozenset[TopicPartition]) -> dict[TopicPartition, int]:
        raise KafkaConnectionError("no broker")

    await run_flow(flow([sink], starts=starts), consumer)

    assert [v for batch in sink.batches for v in batch] == [1, 2, 3]  # none skipped
    assert "start offsets not read" in caplog.text


class Preparing(ListSink[list[int]]):
    """A `PreparingSink` whose writes wait for `gate`; it notes what it was handed, in order."""

    def __init__(self, gate: asyncio.Event) -> None:
        super().__init__()
        self.gate = gate
        self.order: list[str] = []
        self.prepared: list[list[int]] = []
        self.discarded: list[list[int]] = []

    async def prepare(self, batch: list[int]) -> None:
        self.order.append(f"prepare {batch}")
        self.prepared.append(batch)

    async def discard(self, batch: list[int]) -> None:
        """As a real sink: what it still holds for `batch` is released, once."""
        if not any(held is batch for held in [*self.batches, *self.discarded]):
            self.discarded.append(batch)

    async def write(self, batch: list[int]) -> None:
        self.order.append(f"write {batch}")
        await self.gate.wait()
        await super().write(batch)


async def test_a_preparing_sink_gets_the_next_full_batch_while_the_one_before_is_written() -> None:
    gate = asyncio.Event()
    sink = Preparing(gate)
    consumer = ListConsumer(records(TOPIC, [str(i).encode() for i in range(6)]))
    runner: FlowRunner[int, list[int]] = FlowRunner(flow([sink], max_batch=2), consumer)
    await runner.start()
    running = asyncio.create_task(runner.run())
    async with asyncio.timeout(5):
        while len(sink.order) < 2:  # noqa: ASYNC110
            await asyncio.sleep(0.005)
    assert sink.order == ["write [0, 1]", "prepare [2, 3]"], "prepared while [0, 1] is written"
    gate.set()
    await drained_then_stopped(runner, consumer, running)

    assert sink.batches == [[0, 1], [2, 3], [4, 5]]
    # The batch prepared is written as that very object (the sink may keep what it staged).
    assert sink.prepared[0] is sink.batches[1]
    assert sink.discarded == []
    assert consumer.committed == {TopicPartition(TOPIC, 0): 6}


async def test_a_batch_a_rebalance_cuts_down_after_it_was_prepared_is_handled_again() -> None:
    gate = asyncio.Event()
    sink = Preparing(gate)
    a, b = TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)
    consumer = ListConsumer([*records(TOPIC, [b"1", b"2", b"3"], 0), *records(TOPIC, [b"10"], 1)])
    runner: FlowRunner[int, list[int]] = FlowRunner(flow([sink], max_batch=2), consumer)
    await runner.start()
    running = asyncio.create_task(runner.run())
    async with asyncio.timeout(5):
        while not sink.prepared:  # noqa: ASYNC110
            await asyncio.sleep(0.005)
    revoking = asyncio.create_task(consumer.revoke([b]))  # waits for the write in flight
    await asyncio.sleep(0.05)
    gate.set()
    await revoking
    await drained_then_stopped(runner, consumer, running)

    assert sink.prepared == [[3, 10]]
    assert sink.batches == [[1, 2], [3]]  # partition 1's record is its next owner's to write
    assert sink.discarded == [[3, 10]]  # what the sink held for it is released
    assert consumer.committed == {a: 3}


async def test_a_prepare_that_fails_is_logged_and_the_batch_still_written(
    caplog: pytest.LogCaptureFixture,
) -> None:
    gate = asyncio.Event()
    gate.set()

    class Failing(Preparing):
        async def prepare(self, batch: list[int]) -> None:
            raise RuntimeError("staging refused")

    class Slow(Failing):
        async def write(self, batch: list[int]) -> None:
            await asyncio.sleep(0.02)  # long enough for the next batch to fill meanwhile
            await super().write(batch)

    sink = Slow(gate)
    consumer = ListConsumer(records(TOPIC, [str(i).encode() for i in range(6)]))
    await run_flow(flow([sink], max_batch=2), consumer)

    assert sink.batches == [[0, 1], [2, 3], [4, 5]]
    assert "Slow.prepare failed" in caplog.text
    assert consumer.committed == {TopicPartition(TOPIC, 0): 6}


async def test_while_a_batch_is_written_a_poll_takes_at_most_a_thousand_records() -> None:
    """A poll's records are unpacked without a turn of the event loop: while a write waits
    for its round trips, polls stay small, and the batch still fills to `max_batch`."""
    gate = asyncio.Event()
    asked: list[int] = []

    class Held(ListSink[list[int]]):
        async def write(self, batch: list[int]) -> None:
            await gate.wait()
            await super().write(batch)

    class Asked(ListConsumer):
        async def getmany(self, *, timeout_ms: int, max_records: int) -> dict[Any, list[Any]]:
            asked.append(max_records)
            return await super().getmany(timeout_ms=timeout_ms, max_records=max_records)

    sink = Held()
    consumer = Asked(records(TOPIC, [str(i).encode() for i in range(6000)]))
    runner: FlowRunner[int, list[int]] = FlowRunner(flow([sink], max_batch=3000), consumer)
    await runner.start()
    running = asyncio.create_task(runner.run())
    async with asyncio.timeout(5):
        while sum(min(n, 1000) for n in asked[1:]) < 3000:  # noqa: ASYNC110
            await asyncio.sleep(0.005)
    gate.set()
    await drained_then_stopped(runner, consumer, running)

    assert asked[0] == 3000  # nothing written yet: one poll for the whole batch
    assert asked[1:4] == [1000, 1000, 1000]
    assert [len(b) for b in sink.batches] == [3000, 3000]
