"""One reader of `ai.responses` per gateway process, answering the API's waiting calls by
request id.

It reads without a consumer group: every partition assigned, starting at the end as of start-up
(a call registers its request id before it publishes, so its answer is always after that
point). Each answer resolves every call waiting for its request id; an answer nobody waits for
(another gateway's, or another pipeline user's) is skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError

from runtime import kafka
from runtime.settings import ResolvedSettings
from schemas import DecodeError, decode
from schemas.events import AIResponse
from topics.admin import existing_partitions
from topics.catalog import AI_RESPONSES

log = logging.getLogger("scribe.gateway.ai_responses")
RETRY_START_S = 2.0


@dataclass
class _Waiting:
    future: asyncio.Future[AIResponse]
    calls: int = 1


class ResponseWaiter:
    def __init__(self, settings: ResolvedSettings) -> None:
        self.settings = settings
        self._waiting: dict[str, _Waiting] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    @property
    def ready(self) -> bool:
        """Reading from the end of every partition: an answer published now will be seen."""
        return self._ready.is_set()

    async def start(self, wait_s: float = 30.0) -> None:
        """Start reading in the background; wait up to `wait_s` for the first assignment (the
        API answers 503 until then)."""
        self._task = asyncio.create_task(self._run(), name="gateway ai.responses reader")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), wait_s)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for waiting in self._waiting.values():
            waiting.future.cancel()
        self._waiting.clear()

    def expect(self, request_id: str) -> tuple[Awaitable[AIResponse], bool]:
        """The answer to come for `request_id`, and whether this call is the first waiting for
        it (a later one, same id, shares the answer and need not publish again). Each call that
        expects must `forget` when it stops waiting for any reason but the answer."""
        waiting = self._waiting.get(request_id)
        if waiting is not None and not waiting.future.done():
            waiting.calls += 1
            return asyncio.shield(waiting.future), False
        waiting = _Waiting(asyncio.get_running_loop().create_future())
        self._waiting[request_id] = waiting
        return asyncio.shield(waiting.future), True

    def forget(self, request_id: str) -> None:
        """One call stopped waiting (timed out, or its publish failed); the answer is dropped
        once no call waits for it."""
        waiting = self._waiting.get(request_id)
        if waiting is None:
            return
        waiting.calls -= 1
        if waiting.calls <= 0:
            del self._waiting[request_id]
            waiting.future.cancel()

    async def _run(self) -> None:
        while True:
            try:
                await self._read()
            except asyncio.CancelledError:
                raise
            except (KafkaError, OSError) as exc:
                log.error("ai.responses reader: %r; restarting in %.0f s", exc, RETRY_START_S)
            except Exception:
                log.exception("ai.responses reader failed; restarting in %.0f s", RETRY_START_S)
            finally:
                self._ready.clear()
                if self._consumer is not None:
                    with contextlib.suppress(Exception):
                        await self._consumer.stop()
                    self._consumer = None
            await asyncio.sleep(RETRY_START_S)

    async def _read(self) -> None:
        wait_ms = self.settings.base.fetch_wait_ms(20)
        consumer = kafka.consumer(self.settings, None, fetch_max_wait_ms=wait_ms)
        self._consumer = consumer
        await consumer.start()
        partitions = await existing_partitions(self.settings, [AI_RESPONSES.name])
        if not partitions:
            raise KafkaError(f"topic {AI_RESPONSES.name} does not exist (yet)")
        consumer.assign(partitions)
        await consumer.seek_to_end(*partitions)
        for partition in partitions:  # resolve the end now, before any call registers
            await consumer.position(partition)
        self._ready.set()
        log.info("ai.responses reader: %d partitions, from the end", len(partitions))
        while True:
            batches = await consumer.getmany(timeout_ms=1000, max_records=500)
            for records in batches.values():
                for record in records:
                    self._answer(record)

    def _answer(self, record: Any) -> None:
        if not self._waiting or record.value is None:
            return
        try:
            response = decode(record.value, AIResponse)
        except DecodeError as exc:
            log.warning("ai.responses %d@%d unreadable: %s", record.partition, record.offset, exc)
            return
        waiting = self._waiting.pop(response.request_id, None)
        if waiting is not None and not waiting.future.done():
            waiting.future.set_result(response)
