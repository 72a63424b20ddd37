"""Exact free-image quotas on Apache Kafka while a router worker dies. Ten users send 1,500 image
requests each, half through the OpenAI-compatible API (the official SDK) and half straight to
ai.requests, to two router workers; one is SIGKILLed a third of the way in and started again.
Then:
- every request is answered, and every answer to one request says the same;
- each user got exactly 1,000 free-tier images that UTC day (the rest paid);
- a provider call was repeated only for requests in flight at the kill (counted and printed);
- the usage ledger holds one row per request, even for a repeated call.

The test runs on a one-broker Apache Kafka, PostgreSQL, Redis and provider simulator of its own:
a worker of another test on the shared cluster would route these requests again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import asyncpg
import httpx
import openai
import pytest
from aiokafka import AIOKafkaConsumer

from devkit.harness import WorkerProcess, gateway_process, new_worker
from devkit.stack import LocalStack
from devkit.stack.apache_kafka.cluster import KafkaCluster
from devkit.stack.apache_kafka.distribution import fetch
from runtime.settings import kafka_bootstrap_servers
from schemas import decode
from schemas.events import AIRequest, AIResponse, Priority, RequestKind, UserTier
from schemas.examples import example
from tests.integration.router.conftest import GEMINI_KEYS, OPENROUTER_KEYS
from topics.publisher import Publisher

# Setting up takes a minute (a broker, PostgreSQL, Redis, two workers, the gateway), the 15,000
# requests one or two more.
pytestmark = [pytest.mark.engine, pytest.mark.timeout(900)]
REPORT_EVERY_S = 10

REPO = Path(__file__).resolve().parents[2]
USERS = 10
PER_USER = 1_500
FREE_PER_DAY = 1_000
KILL_AFTER = PER_USER * USERS // 3  # answers seen before the SIGKILL
API_CONCURRENCY = 64
DIRECT_RATE = 100  # requests/s straight to ai.requests
DIRECT_CHUNK = 50
# What one worker can have in flight at the kill: its urgent and normal lanes' slots (the
# router's defaults), each a provider call that may run again on the worker that takes over.
IN_FLIGHT_BOUND = 64 + 32


@pytest.fixture(scope="module")
def own_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A one-broker Apache Kafka for this module alone, deleted afterwards."""
    cluster = KafkaCluster(
        tmp_path_factory.mktemp("quota-kafka"), fetch(REPO / ".scribe" / "kafka", report=print)
    )
    try:
        yield cluster.up_fresh(1, report=print)
    finally:
        cluster.down(report=print, purge=True)


@pytest.fixture(scope="module")
def env(own_kafka: str, state_dir: Path) -> Iterator[dict[str, str]]:
    with LocalStack(state_dir / "quota-kill-stack", broker=None).running() as stack:
        simulator = stack["SCRIBE_PROVIDER_URL"]
        yield {
            **stack,
            "SCRIBE_KAFKA_URL": own_kafka,
            "SCRIBE_TOPIC_REPLICATION": "1",
            "SCRIBE_FAST_REBALANCE": "1",
            "OPENROUTER_API_KEYS": ",".join(OPENROUTER_KEYS),
            "GEMINI_API_KEYS": ",".join(GEMINI_KEYS),
            "SCRIBE_OPENROUTER_URL": simulator,
            "SCRIBE_GEMINI_URL": simulator,
        }


class Answers:
    """Every ai.responses record, read from the beginning while the test runs."""

    def __init__(self) -> None:
        self.by_request: dict[str, list[AIResponse]] = defaultdict(list)
        self.changed = asyncio.Event()

    async def read(self, kafka_url: str) -> None:
        consumer = AIOKafkaConsumer(
            "ai.responses",
            bootstrap_servers=kafka_bootstrap_servers(kafka_url),
            group_id=None,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            while True:
                batches = await consumer.getmany(timeout_ms=200, max_records=5_000)
                for records in batches.values():
                    for record in records:
                        answer = decode(record.value or b"", AIResponse)
                        self.by_request[answer.request_id].append(answer)
                self.changed.set()
        finally:
            await consumer.stop()

    async def until_count(self, count: int, timeout: float) -> None:
        await self._until(lambda: len(self.by_request) >= count, timeout)
        assert len(self.by_request) >= count, f"{len(self.by_request)} of {count} answers came"

    async def until(self, ids: set[str], timeout: float) -> None:
        await self._until(lambda: ids <= self.by_request.keys(), timeout)
        missing = ids - self.by_request.keys()
        assert not missing, f"{len(missing)} of {len(ids)} requests never answered"

    async def _until(self, done: Callable[[], bool], timeout: float) -> None:
        """Until `done()`, or the timeout (the caller's check then says what is missing)."""
        deadline = time.monotonic() + timeout
        next_report = time.monotonic() + REPORT_EVERY_S
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), min(left, 5))
            if time.monotonic() >= next_report:
                print(f"  {len(self.by_request)} requests answered so far")
                next_report = time.monotonic() + REPORT_EVERY_S


@contextlib.asynccontextmanager
async def reading(answers: Answers, kafka_url: str) -> AsyncIterator[None]:
    task = asyncio.create_task(answers.read(kafka_url))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def tag(run: str, user: int, n: int) -> str:
    return f"{run}-u{user}-{n}"


async def through_api(
    url: str, token: str, prompts: list[str], ids: set[str], failures: list[str]
) -> None:
    """One user's API requests, a few at a time; each answer's request id goes into `ids`."""
    gate = asyncio.Semaphore(API_CONCURRENCY // USERS or 1)
    async with openai.AsyncOpenAI(
        base_url=f"{url}/v1", api_key=token, max_retries=0, timeout=300
    ) as client:

        async def one(prompt: str) -> None:
            async with gate:
                try:
                    raw = await client.images.with_raw_response.generate(
                        prompt=prompt,
                        # The calls queue behind the others and the kill: a deadline that lasts.
                        extra_headers={"x-scribe-priority": "normal", "x-scribe-timeout-s": "300"},
                    )
                except openai.APIError as error:
                    failures.append(f"{prompt}: {error!r}")
                    return
                ids.add(raw.headers["x-scribe-request-id"])

        await asyncio.gather(*(one(p) for p in prompts))


def direct_requests(run: str, users: list[str]) -> dict[str, AIRequest]:
    """The first half of each user's requests, published straight to ai.requests."""
    requests = [
        example(
            AIRequest,
            request_id=f"direct-{tag(run, u, n)}",
            user_id=user,
            kind=RequestKind.IMAGE,
            priority=Priority.NORMAL,
            user_tier=UserTier.FREE,
            prompt=f"A lighthouse [tag:{tag(run, u, n)}]",
            deadline=None,
        )
        for u, user in enumerate(users)
        for n in range(PER_USER // 2)
    ]
    return {r.request_id: r for r in requests}


async def publish_paced(publisher: Publisher, requests: list[AIRequest]) -> None:
    """At about the pace the API's calls go, so neither half waits behind the other."""
    for start in range(0, len(requests), DIRECT_CHUNK):
        await publisher.publish_many(requests[start : start + DIRECT_CHUNK])
        await asyncio.sleep(DIRECT_CHUNK / DIRECT_RATE)


def api_prompts(run: str, u: int) -> list[str]:
    """The second half of user `u`'s requests, sent through the API."""
    return [f"A harbour [tag:{tag(run, u, n)}]" for n in range(PER_USER // 2, PER_USER)]


async def test_each_user_gets_exactly_1000_free_images_while_a_worker_is_killed(
    env: dict[str, str], state_dir: Path
) -> None:
    run = uuid.uuid4().hex[:8]
    app_id = f"quota-kill-{run}"
    users = [f"quota-{run}-{u}" for u in range(USERS)]
    tokens = {user: f"token-{uuid.uuid4().hex}" for user in users}
    workers_dir = state_dir / "quota-kill-workers"

    started: list[WorkerProcess] = []

    def worker() -> WorkerProcess:
        process = new_worker(env, workers_dir, app_id)
        started.append(process)  # stopped at the end, even if it never got ready
        return process.start()

    gateway_env = {
        **env,
        "SCRIBE_GATEWAY_API_TOKENS": ",".join(f"{u}:{t}:free" for u, t in tokens.items()),
        "SCRIBE_GATEWAY_API_RATE": "10000",
        "SCRIBE_GATEWAY_API_BURST": "10000",
    }
    answers = Answers()
    direct = direct_requests(run, users)
    api_ids: set[str] = set()
    api_failures: list[str] = []
    kafka_url = env["SCRIBE_KAFKA_URL"]
    try:
        worker()
        worker()
        with gateway_process(gateway_env, state_dir / f"quota-gateway-{run}.log") as url:
            async with (
                reading(answers, kafka_url),
                Publisher(kafka_bootstrap_servers(kafka_url)) as publisher,
            ):
                calls = asyncio.gather(
                    *(
                        through_api(url, tokens[user], api_prompts(run, u), api_ids, api_failures)
                        for u, user in enumerate(users)
                    )
                )
                started_at = time.monotonic()
                publishing = asyncio.create_task(publish_paced(publisher, list(direct.values())))
                await answers.until_count(KILL_AFTER, timeout=300)
                started[0].kill()
                print(f"killed a worker after {len(answers.by_request)} answers")
                await asyncio.sleep(3)
                # In a thread: the answers and the API calls go on while it starts.
                await asyncio.to_thread(worker)
                await publishing
                await calls
                assert not api_failures, api_failures[:5]
                await answers.until(set(direct) | api_ids, timeout=300)
                print(
                    f"{USERS * PER_USER} requests answered in {time.monotonic() - started_at:.1f} s"
                )
                # While the workers run: the usage flow reads in gathered fetches, so the last
                # usage events may still be on their way to the ledger when the answers are in.
                await check_ledger(env["SCRIBE_DATABASE_URL"], users)
    finally:
        for process in started:
            process.stop()

    final = answered_once(answers, set(direct) | api_ids)
    free = Counter(a.user_id for a in final.values() if a.free_tier)
    assert free == dict.fromkeys(users, FREE_PER_DAY)
    await check_provider_calls(env["SCRIBE_PROVIDER_URL"], run)


def answered_once(answers: Answers, ids: set[str]) -> dict[str, AIResponse]:
    """Each request's answer; one sent again after the kill must say the same."""
    assert len(ids) == USERS * PER_USER
    repeated = 0
    final: dict[str, AIResponse] = {}
    for request_id in ids:
        first, *again = answers.by_request[request_id]
        repeated += len(again)
        for other in again:
            assert (other.status, other.free_tier, other.model) == (
                first.status,
                first.free_tier,
                first.model,
            ), request_id
        assert first.status.value == "ok", first
        final[request_id] = first
    print(f"answers sent more than once: {repeated}")
    return final


async def check_provider_calls(simulator: str, run: str) -> None:
    async with httpx.AsyncClient() as client:
        calls = (await client.get(f"{simulator}/_sim/calls", timeout=60)).json()
    per_request = Counter(c["prompt_tag"] for c in calls if c["prompt_tag"].startswith(run))
    assert len(per_request) == USERS * PER_USER
    repeated = sum(n - 1 for n in per_request.values())
    print(f"provider calls repeated after the kill: {repeated}")
    assert repeated <= IN_FLIGHT_BOUND


async def check_ledger(database_url: str, users: list[str]) -> None:
    """One usage row per request, 1,000 of each user's free."""
    db = await asyncpg.connect(database_url)
    try:
        deadline = time.monotonic() + 120
        while True:
            rows = await db.fetch(
                "SELECT user_id, free_tier, count(*) AS n, count(DISTINCT request_id) AS ids "
                "FROM usage_events WHERE user_id = ANY($1::text[]) GROUP BY user_id, free_tier",
                users,
            )
            stored = sum(r["n"] for r in rows)
            if stored >= USERS * PER_USER or time.monotonic() > deadline:
                break
            await asyncio.sleep(1)
    finally:
        await db.close()
    assert stored == USERS * PER_USER
    assert all(r["n"] == r["ids"] for r in rows)
    by_user = {(r["user_id"], r["free_tier"]): r["n"] for r in rows}
    for user in users:
        assert by_user[(user, True)] == FREE_PER_DAY
        assert by_user[(user, False)] == PER_USER - FREE_PER_DAY
