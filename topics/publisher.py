"""Publish events: checked against their topic (events are pydantic models, validated when
built), keyed by their family's key, serialized with orjson, batched by the producer's linger,
and acknowledged by the broker (`acks=all`) before `publish` returns. `SyncPublisher` offers
the same to code that is not async."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Coroutine, Iterable, Iterator, Sequence
from concurrent.futures import Future as ThreadFuture
from contextlib import contextmanager
from enum import StrEnum
from types import TracebackType
from typing import Any, TypeVar

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaConnectionError, KafkaError
from aiokafka.partitioner import DefaultPartitioner

from runtime import kafka, tracing
from runtime.settings import ResolvedSettings
from schemas import encode
from schemas.events import Event
from topics.catalog import TopicSpec, topic_for

log = logging.getLogger(__name__)
T = TypeVar("T")

# Brokers that refused a producer id: `auto` asks once per process, then publishes without.
_brokers_without_idempotence: set[tuple[str, ...]] = set()

DEFAULT_LINGER_MS = 5
# (topic, key, value) as sent; a None value is a tombstone on a compacted topic.
RawRecord = tuple[str, bytes | None, bytes | None]
Header = tuple[str, bytes]  # a Kafka record header: name, value
MAX_BATCH_BYTES = 256 * 1024


class Idempotence(StrEnum):
    """Whether the producer asks the broker for a producer id (no duplicates on retries).

    `auto` uses it where the broker grants one and falls back otherwise, with a warning: the
    embedded broker (Tansu) answers InitProducerId with an error, Apache Kafka grants it.
    """

    AUTO = "auto"
    ON = "on"
    OFF = "off"


class PublishError(RuntimeError):
    """An event could not be published; the message says why and what to do."""


class WrongTopicError(PublishError):
    def __init__(self, event: Event, spec: TopicSpec) -> None:
        super().__init__(
            f"a {type(event).__name__} cannot go to {spec.name}, whose schema is "
            f"{spec.model.__name__}"
        )


class IdempotenceUnavailableError(PublishError):
    """Idempotence was required (`on`) but the broker did not grant a producer id."""


class _DropInitPidError(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Unexpected error during InitProducerIdRequest")


@contextmanager
def _init_pid_error_reported_by_us(active: bool) -> Iterator[None]:
    """aiokafka logs a refused producer id as an unexpected ERROR; in `auto` mode it is an
    expected answer that `start` reports itself, in plainer words."""
    if not active:
        yield
        return
    sender_log = logging.getLogger("aiokafka.producer.sender")
    dropper = _DropInitPidError()
    sender_log.addFilter(dropper)
    try:
        yield
    finally:
        sender_log.removeFilter(dropper)


class Publisher:
    """One aiokafka producer. Concurrent `publish` calls share batches (linger), so many small
    publishes from many coroutines cost few broker round trips."""

    def __init__(
        self,
        kafka_settings: ResolvedSettings | list[str],
        idempotence: Idempotence | str = Idempotence.AUTO,
        linger_ms: int = DEFAULT_LINGER_MS,
        request_timeout_ms: int = 30_000,
    ) -> None:
        """`kafka_settings`: the pipeline's settings (servers and security), or bare bootstrap
        servers of a PLAINTEXT broker (tests and developer tools)."""
        self.settings = (
            kafka_settings
            if isinstance(kafka_settings, ResolvedSettings)
            else ResolvedSettings.kafka_only(kafka_settings)
        )
        self.idempotence = Idempotence(idempotence)
        self.linger_ms = linger_ms
        self.request_timeout_ms = request_timeout_ms
        self.idempotent = False  # what the running producer actually does; set by `start`
        self._producer: Any = None

    def _new_producer(self, idempotent: bool) -> AIOKafkaProducer:
        return kafka.producer(
            self.settings,
            enable_idempotence=idempotent,
            linger_ms=self.linger_ms,
            max_batch_size=MAX_BATCH_BYTES,
            request_timeout_ms=self.request_timeout_ms,
        )

    async def start(self) -> None:
        servers = tuple(self.settings.bootstrap_servers)
        if self.idempotence is Idempotence.OFF or (
            self.idempotence is Idempotence.AUTO and servers in _brokers_without_idempotence
        ):
            self._producer = await self._started(self._new_producer(idempotent=False))
            return
        producer = self._new_producer(idempotent=True)
        quiet = self.idempotence is Idempotence.AUTO
        try:
            # The producer id is requested during start; a broker without it answers an error.
            with _init_pid_error_reported_by_us(quiet):
                self._producer = await self._started(producer)
            self.idempotent = True
        except KafkaConnectionError:
            raise  # no broker to ask: not an answer about idempotence
        except KafkaError as exc:
            if self.idempotence is Idempotence.ON:
                raise IdempotenceUnavailableError(
                    f"the broker at {','.join(servers)} did not grant a producer id ({exc!r}); "
                    "set SCRIBE_PRODUCER_IDEMPOTENCE=auto or off to publish without idempotence"
                ) from exc
            _brokers_without_idempotence.add(servers)
            log.warning(
                "the broker at %s did not grant a producer id (%r): this process publishes "
                "without idempotence, so a retried batch may be written twice (consumers "
                "dedupe by event id)",
                ",".join(servers),
                exc,
            )
            self._producer = await self._started(self._new_producer(idempotent=False))

    async def _started(self, producer: Any) -> Any:
        try:
            await producer.start()
        except BaseException:
            await producer.stop()
            raise
        return producer

    async def stop(self) -> None:
        """Flush what is batched, then close."""
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await producer.stop()

    async def __aenter__(self) -> Publisher:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def _running(self) -> Any:
        if self._producer is None:
            raise PublishError("the publisher is not started: use `async with Publisher(...)`")
        return self._producer

    async def enqueue(
        self, event: Event, spec: TopicSpec | None = None, headers: Sequence[Header] = ()
    ) -> asyncio.Future[Any]:
        """Add the event to the current batch; the returned future resolves to its
        RecordMetadata once the broker acknowledged it (or raises why it did not). `headers`
        go on the record as given (the gateway's CloudEvents attributes), with the current
        span's `traceparent` when there is one (runtime.tracing)."""
        target = spec or topic_for(event)
        if not isinstance(event, target.model):
            raise WrongTopicError(event, target)
        future: asyncio.Future[Any] = await self._running().send(
            target.name,
            encode(event),
            key=target.key_of(event),
            headers=tracing.inject(headers) or None,
        )
        return future

    async def enqueue_raw(
        self, topic: str, value: bytes | None, key: bytes | None = None
    ) -> asyncio.Future[Any]:
        """Bytes exactly as given, unchecked: for replays, deliberately bad input (the demo,
        load tests) and tombstones (None). Producers of events use `publish`."""
        future: asyncio.Future[Any] = await self._running().send(topic, value, key=key)
        return future

    async def publish(self, event: Event, spec: TopicSpec | None = None) -> Any:
        """Return the event's RecordMetadata (topic, partition, offset) once acknowledged."""
        return await (await self.enqueue(event, spec))

    async def publish_many(self, events: Iterable[Event], spec: TopicSpec | None = None) -> int:
        """Batch all, then wait for every acknowledgement; return the count."""
        futures = [await self.enqueue(event, spec) for event in events]
        for future in futures:
            await future
        return len(futures)

    async def publish_raw(self, records: Iterable[RawRecord]) -> int:
        """Send each (topic, key, value) as given, then wait for every acknowledgement;
        return the count."""
        futures = [await self.enqueue_raw(topic, value, key) for topic, key, value in records]
        for future in futures:
            await future
        return len(futures)

    async def publish_burst(
        self, events: Sequence[Event], spec: TopicSpec
    ) -> dict[TopicPartition, int]:
        """Send all at once, as few produce batches per partition as fit, keyed as `publish`
        keys them, so a burst reaches the broker together. Returns each partition's last
        offset once acknowledged."""
        producer = self._running()
        partitions = sorted(await producer.partitions_for(spec.name))
        partitioner = DefaultPartitioner()
        batches: dict[int, list[Any]] = {}  # aiokafka BatchBuilders
        for event in events:
            if not isinstance(event, spec.model):
                raise WrongTopicError(event, spec)
            key, value = spec.key_of(event), encode(event)
            partition = partitioner(key, partitions, partitions)
            if partition not in batches:
                batches[partition] = [producer.create_batch()]
            open_batches = batches[partition]
            if open_batches[-1].append(key=key, value=value, timestamp=None) is None:
                open_batches.append(producer.create_batch())
                if open_batches[-1].append(key=key, value=value, timestamp=None) is None:
                    raise PublishError(f"an event of {len(value)} bytes does not fit in a batch")
        sent = [
            (partition, batch, await producer.send_batch(batch, spec.name, partition=partition))
            for partition, group in batches.items()
            for batch in group
        ]
        last: dict[TopicPartition, int] = {}
        for partition, batch, future in sent:
            tp = TopicPartition(spec.name, partition)
            base = (await future).offset
            last[tp] = max(last.get(tp, -1), base + batch.record_count() - 1)
        return last

    async def flush(self) -> None:
        await self._running().flush()


def publisher_for(settings: ResolvedSettings) -> Publisher:
    """A publisher configured by SCRIBE_KAFKA_URL and SCRIBE_PRODUCER_*."""
    return Publisher(
        settings,
        idempotence=settings.base.producer_idempotence,
        linger_ms=settings.base.producer_linger_ms,
    )


class SyncPublisher:
    """`Publisher` for code that is not async: the producer runs on an event loop in a
    background thread; each call blocks until the broker acknowledged. Safe to share between
    threads, whose publishes then share batches.

        with SyncPublisher(["127.0.0.1:9092"]) as publisher:
            publisher.publish(event)
    """

    def __init__(
        self,
        kafka_settings: ResolvedSettings | list[str],
        idempotence: Idempotence | str = Idempotence.AUTO,
        linger_ms: int = DEFAULT_LINGER_MS,
        timeout: float = 60.0,
    ) -> None:
        self._publisher = Publisher(kafka_settings, idempotence, linger_ms)
        self.timeout = timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def idempotent(self) -> bool:
        return self._publisher.idempotent

    def start(self) -> None:
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="scribe-publisher", daemon=True)
        thread.start()
        self._loop, self._thread = loop, thread
        try:
            self._call(self._publisher.start())
        except BaseException:
            self._shut_down_loop()
            raise

    def stop(self) -> None:
        if self._loop is None:
            return
        try:
            self._call(self._publisher.stop())
        finally:
            self._shut_down_loop()

    def _shut_down_loop(self) -> None:
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(self.timeout)
        loop.close()

    def __enter__(self) -> SyncPublisher:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        if self._loop is None:
            coroutine.close()
            raise PublishError("the publisher is not started: use `with SyncPublisher(...)`")
        future: ThreadFuture[T] = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        return future.result(self.timeout)

    def publish(self, event: Event, spec: TopicSpec | None = None) -> Any:
        """Block until the broker acknowledged; return the RecordMetadata."""
        return self._call(self._publisher.publish(event, spec))

    def publish_many(self, events: Iterable[Event], spec: TopicSpec | None = None) -> int:
        return self._call(self._publisher.publish_many(list(events), spec))

    def flush(self) -> None:
        self._call(self._publisher.flush())
