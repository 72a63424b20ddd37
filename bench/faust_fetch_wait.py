"""A Faust agent on the embedded broker, for the `faust.agent_latency` peer case. Tansu answers
a waiting fetch when the fetch's maximum wait runs out, not when data arrives, and Faust fixes
that wait at 1,500 ms, so every Faust hop on the embedded stack adds up to 1.5 s. Measured (a
record produced into an idle topic, time until an aiokafka consumer has it, p50/max of 30):
1,500 ms wait: ~550/1,300 ms; 500 ms: 215/467 ms; 100 ms: 19/75 ms; 20 ms: 4/11 ms; 5 ms:
3/10 ms. Scribe's worker runs no Faust consumer (`scribe.app.FlowsOnly`); its flows' consumers
set their own waits (`ConsumerSpec.fetch_wait_ms`).
"""

from __future__ import annotations

from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka

FETCH_MAX_WAIT_MS = 20


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
