"""A deployment that still sets `SCRIBE_PROCESSING_GUARANTEE=exactly_once` (it turned on Faust's
transactions, which covered only Faust's agents, and no flow is one any more) starts on Apache
Kafka, says the setting has no effect, and stays exact: one worker is SIGKILLed mid-stream and
the ledger still equals the exact sums of what was published (the ledger's event-id guard)."""

from __future__ import annotations

import asyncpg
import pytest

from scribe.app import NO_TRANSACTIONS_NEEDED
from tests.engine.group import WorkerGroup, stream_with_a_failure, wait_for_spread

pytestmark = pytest.mark.engine


async def test_workers_set_to_exactly_once_warn_and_survive_a_kill_with_exact_totals(
    worker_group: WorkerGroup, db: asyncpg.Connection, kafka_url: str
) -> None:
    started = worker_group.start(2, SCRIBE_PROCESSING_GUARANTEE="exactly_once")
    await wait_for_spread(worker_group, kafka_url)
    for worker in started:
        log = worker.log_path.read_text(errors="replace")
        assert NO_TRANSACTIONS_NEEDED in log, worker.log_tail()

    await stream_with_a_failure(worker_group, db, kafka_url, started[0].kill, name="eos")
    assert worker_group.alive() == started[1:], worker_group.logs()
