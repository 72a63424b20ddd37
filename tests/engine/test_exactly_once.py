"""`SCRIBE_PROCESSING_GUARANTEE=exactly_once` (Faust's transactions, which Tansu lacks) end to
end on Apache Kafka: the workers' Faust agents run transactional producers, one worker is
SIGKILLed mid-stream, and the ledger still equals the exact sums of what was published. (The
usage batch consumer is not Faust's: its exactness comes from the ledger's event-id guard.)"""

from __future__ import annotations

import asyncpg
import pytest

from tests.engine.group import WorkerGroup, stream_with_a_failure, wait_for_spread

pytestmark = pytest.mark.engine


async def test_exactly_once_workers_survive_a_kill_with_exact_totals(
    worker_group: WorkerGroup, db: asyncpg.Connection, kafka_url: str
) -> None:
    started = worker_group.start(2, SCRIBE_PROCESSING_GUARANTEE="exactly_once")
    await wait_for_spread(worker_group, kafka_url)
    for worker in started:
        log = worker.log_path.read_text(errors="replace")
        assert "transactional producers" in log, worker.log_tail()

    await stream_with_a_failure(worker_group, db, kafka_url, started[0].kill, name="eos")
    assert worker_group.alive() == started[1:], worker_group.logs()
