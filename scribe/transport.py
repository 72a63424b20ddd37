"""Faust's aiokafka transport with the worker consumer's fetch wait as a setting.

Faust creates its worker consumer with `fetch_max_wait_ms=1500` hard-coded. Tansu answers a
fetch that found no data only when that wait expires, so a message sent to an idle topic waited
up to 1.5 s before any agent saw it. `SCRIBE_FETCH_MAX_WAIT_MS` sets the wait instead.
"""

from __future__ import annotations

from typing import Any

from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread, Consumer, Transport


def transport_class(fetch_max_wait_ms: int) -> type[Transport]:
    """The aiokafka transport whose worker consumer fetches with this wait."""

    class FetchWaitConsumerThread(AIOKafkaConsumerThread):
        def _create_worker_consumer(self, transport: Any) -> Any:
            consumer = super()._create_worker_consumer(transport)
            # aiokafka hands this to its Fetcher when the consumer starts.
            consumer._fetch_max_wait_ms = fetch_max_wait_ms
            return consumer

    class FetchWaitConsumer(Consumer):
        def _new_consumer_thread(self) -> AIOKafkaConsumerThread:
            return FetchWaitConsumerThread(self, loop=self.loop, beacon=self.beacon)

    class FetchWaitTransport(Transport):
        Consumer = FetchWaitConsumer

    return FetchWaitTransport


def use_fetch_wait(app: Any, fetch_max_wait_ms: int) -> None:
    """Before anything touches `app.transport`: give the app's consumer this fetch wait."""
    app.transport = transport_class(fetch_max_wait_ms)(app.conf.broker_consumer, app)
