"""Benchmark: this process's CPU per outbound HTTP call, by client, side by side.

    .venv/bin/python -m bench.outbound_calls --calls 3000

The provider simulator runs in a process of its own (its CPU is not counted), and each client
posts the same Gemini request to it, one at a time and 16 at once, twice in turn:

- `httpx`: httpx's own client and pool (httpcore), as httpx ships;
- `httpx over aiohttp`: `runtime.http.outbound_client`, httpx's objects over aiohttp's pool;
- `JsonPoster`: `runtime.http.JsonPoster`, the providers' and CDN purges' client.

The figures are CPU (user and system) of this process per call, which the machine's other load
changes less than wall time.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

from devkit.stack.processes import (
    accepts_connections,
    free_port,
    spawn,
    terminate,
    wait_until,
)
from runtime.http import JsonPoster, outbound_client

PATH = "/v1beta/models/gemini-2.5-flash:generateContent"
BODY = {
    "contents": [{"role": "user", "parts": [{"text": "Describe the harbour at dusk"}]}],
    "generationConfig": {"maxOutputTokens": 256},
}
HEADERS = {"x-goog-api-key": "sim-gemini-key-1"}
WARM_UP = 50


async def cpu_per_call(call: Callable[[], Awaitable[None]], calls: int, at_once: int) -> float:
    """Seconds of this process's CPU per call, `at_once` calls in flight."""
    slots = asyncio.Semaphore(at_once)

    async def one() -> None:
        async with slots:
            await call()

    await asyncio.gather(*(one() for _ in range(WARM_UP)))
    started = time.process_time()
    await asyncio.gather(*(one() for _ in range(calls)))
    return (time.process_time() - started) / calls


async def measure(url: str, calls: int) -> None:
    plain = httpx.AsyncClient(base_url=url, limits=httpx.Limits(max_connections=100))
    layered = outbound_client(base_url=url)
    poster = JsonPoster(url)

    async def via_httpx() -> None:
        (await plain.post(PATH, json=BODY, headers=HEADERS)).raise_for_status()

    async def via_layered() -> None:
        (await layered.post(PATH, json=BODY, headers=HEADERS)).raise_for_status()

    async def via_poster() -> None:
        answer = await poster.post(PATH, BODY, HEADERS, 30.0)
        assert answer.status == 200, answer.status

    clients = {"httpx": via_httpx, "httpx over aiohttp": via_layered, "JsonPoster": via_poster}
    try:
        for at_once in (1, 16):
            for round_ in (1, 2):
                figures = [
                    f"{name} {await cpu_per_call(call, calls, at_once) * 1e3:.3f} ms"
                    for name, call in clients.items()
                ]
                print(f"{at_once:>2} at once, round {round_}: " + "; ".join(figures), flush=True)
    finally:
        await plain.aclose()
        await layered.aclose()
        await poster.aclose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=3000, help="calls per client and figure")
    args = parser.parse_args(argv)
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "provider_simulator.log"
        command = ["-m", "devkit.stack.provider_simulator", "--host", "127.0.0.1"]
        simulator = spawn([sys.executable, *command, "--port", str(port)], log)
        try:
            wait_until(
                lambda: accepts_connections(port),
                "the provider simulator",
                30,
                simulator.alive,
                log,
            )
            print("CPU of this process per call to the provider simulator:", flush=True)
            asyncio.run(measure(f"http://127.0.0.1:{port}", args.calls))
        finally:
            terminate(simulator)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
