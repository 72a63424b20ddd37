"""Faust on the embedded broker. Tansu answers a waiting fetch only when the fetch's maximum
wait runs out, not when data arrives (measured: a record produced into an idle topic reached
an aiokafka consumer after 550-1,300 ms with a 1,500 ms wait, after 1-8 ms with 100 ms), and
Faust fixes that wait at 1,500 ms, so every Faust hop on the embedded stack would add up to
1.5 s. Apache Kafka answers as soon as data arrives; this is for the embedded stack only.
"""

from __future__ import annotations

from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka

FETCH_MAX_WAIT_MS = 100


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # Read by AIOKafkaConsumer.start() when it builds its fetcher; Faust passes no option.
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _Transport(faust_aiokafka.Transport):
    Consumer = _Consumer


def use_short_fetch_wait(app: faust.App) -> None:
    """Call right after creating the app, before anything touches its topics."""
    app.transport = _Transport(app.conf.broker_consumer, app)
