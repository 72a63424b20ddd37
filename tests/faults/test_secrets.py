"""A worker and the CLI run with test secrets in the environment, in files and in URLs; every
output of the run (worker log, /metrics, /health, /ready, dead-letter headers, CLI output) is
searched for them."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
import redis.asyncio as aioredis

from devkit.harness import new_worker
from schemas import encode
from schemas.events import CacheInvalidation
from schemas.examples import example
from tests.faults.conftest import FaultStack
from tests.faults.observe import dead_letters, eventually, publish_raw
from topics.catalog import CACHE_INVALIDATIONS

pytestmark = pytest.mark.faults


def _with_password(url: str, user: str, password: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{parts.hostname}:{parts.port}"))


def _cli(args: list[str], env: dict[str, str], timeout: float = 60) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "scribe", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return result.stdout + result.stderr


async def test_no_output_of_a_run_contains_a_secret(
    fault_stack: FaultStack, state_dir: Path
) -> None:
    run = uuid.uuid4().hex[:8]
    pg_secret, redis_secret, kafka_secret = (f"{name}-secret-{run}" for name in ("pg", "rd", "kf"))
    secrets = (pg_secret, redis_secret, kafka_secret)
    base = fault_stack.env()
    password_file = state_dir / f"redis-password-{run}"
    password_file.write_text(redis_secret + "\n")
    env = {
        **base,
        # The embedded PostgreSQL trusts loopback: the URL's password is accepted, not checked.
        "SCRIBE_DATABASE_URL": _with_password(base["SCRIBE_DATABASE_URL"], "postgres", pg_secret),
        "SCRIBE_REDIS_PASSWORD_FILE": str(password_file),
    }
    admin = aioredis.from_url(base["SCRIBE_REDIS_URL"])
    await admin.config_set("requirepass", redis_secret)  # Redis now checks the password
    worker = new_worker(env, state_dir / "secret-workers")
    outputs: dict[str, str] = {}
    try:
        worker.start()
        marker = f"secret-{run}"
        doomed = f"secret:{run}:key"
        cache = aioredis.from_url(base["SCRIBE_REDIS_URL"], password=redis_secret)
        await cache.set(doomed, b"cached")
        invalidation = example(CacheInvalidation, id=marker, keys=[doomed])
        bad_key = f"{marker}-bad".encode()
        await publish_raw(
            base["SCRIBE_KAFKA_URL"],
            [
                (CACHE_INVALIDATIONS.name, bad_key, b'{"oops": '),
                (CACHE_INVALIDATIONS.name, marker.encode(), encode(invalidation)),
            ],
        )

        async def removed() -> bool:
            return bool(await cache.exists(doomed) == 0)

        # The worker reached the password-protected Redis: the password went to redis-py.
        assert await eventually(removed, timeout=60), worker.log_tail()
        await cache.aclose()

        letters = await dead_letters(base["SCRIBE_KAFKA_URL"], CACHE_INVALIDATIONS, {bad_key})
        assert letters
        outputs["dead-letter headers"] = repr([r.headers for r in letters])
        async with httpx.AsyncClient(base_url=worker.url, timeout=5) as web:
            for path in ("/metrics", "/health", "/ready"):
                outputs[path] = (await web.get(path)).text
        outputs["cli db migrate"] = _cli(["db", "migrate"], env)
        outputs["cli bad database url"] = _cli(
            ["db", "migrate"],
            {**env, "SCRIBE_DATABASE_URL": f"mysql://scribe:{pg_secret}@db/scribe"},
        )
        outputs["cli sasl without tls material"] = _cli(
            ["db", "migrate"],
            {
                **env,
                "SCRIBE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                "SCRIBE_KAFKA_SASL_PASSWORD": kafka_secret,
                "SCRIBE_KAFKA_SSL_CAFILE": "/nonexistent/ca.pem",
            },
        )
        outputs["cli wrong redis password file"] = _cli(
            ["db", "migrate"],
            {**env, "SCRIBE_REDIS_PASSWORD": redis_secret},  # and the _FILE: contradictory
        )
    finally:
        worker.stop()
        await admin.config_set("requirepass", "")
        await admin.aclose()
    outputs["worker log"] = worker.log_path.read_text(errors="replace")

    assert "migration" in outputs["cli db migrate"]
    assert "***" in outputs["cli bad database url"]
    for where, text in outputs.items():
        for secret in secrets:
            assert secret not in text, f"a secret leaked into {where}"
    print(f"searched {len(outputs)} outputs, {sum(map(len, outputs.values()))} characters")
