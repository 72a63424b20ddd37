"""A local CDN purge API: a real HTTP server on loopback that speaks the Fastly and Cloudflare
purge shapes, records every purge, and answers 429 or 5xx when told to.

    python -m devkit.stack.cdn_simulator --port 8787

Purge API (as the real ones; any non-empty credential is accepted):
- `POST /service/{service_id}/purge` with `Fastly-Key` and `{"surrogate_keys": [...]}` (or a
  `Surrogate-Key: a b c` header), at most 256 keys;
- `POST /purge/{host/path}` with `Fastly-Key`: one URL;
- `POST /zones/{zone_id}/purge_cache` with `Authorization: Bearer ...` and `{"files": [...]}`
  or `{"tags": [...]}`, at most 30 per call.

Control API for tests and the demo (under `/_sim/`):
- `POST /_sim/faults` `{"provider": "fastly"|"cloudflare"|"*", "status": 429, "count": 3,
  "retry_after": "1"}`: the next `count` purge calls to that provider get `status`; with
  `"seconds": 30` instead, every call for the next 30 s does (an outage; with both, whichever
  runs out first). Faults answer in the order they were set: a 500 for 30 s then a 429 for
  60 s makes a one-minute outage that turns into rate limiting halfway;
  `DELETE /_sim/faults` clears them;
- `GET /_sim/purges?contains=text&provider=p&kind=url|tag`: recorded purges;
- `GET /_sim/requests?contains=text`: every purge call with its answer;
- `GET /_sim/stats`: counts; `GET /_sim/health`.
"""

from __future__ import annotations

import argparse
import time
import uuid
from collections import Counter, deque
from dataclasses import asdict, dataclass
from typing import Any

from aiohttp import web

FASTLY_BATCH = 256
CLOUDFLARE_BATCH = 30
MAX_RECORDS = 1_000_000


@dataclass(frozen=True)
class Purge:
    provider: str
    kind: str
    target: str
    at: float


@dataclass(frozen=True)
class Call:
    provider: str
    path: str
    status: int
    targets: tuple[str, ...]
    at: float


@dataclass
class Fault:
    provider: str
    status: int
    remaining: int | None  # calls left to answer; None: no limit (see `until`)
    retry_after: str | None
    until: float | None = None  # monotonic time the fault ends; None: it ends by count

    def active(self, now: float) -> bool:
        counted = self.remaining is None or self.remaining > 0
        return counted and (self.until is None or now < self.until)


class SimulatorState:
    def __init__(self) -> None:
        self.purges: deque[Purge] = deque(maxlen=MAX_RECORDS)
        self.calls: deque[Call] = deque(maxlen=MAX_RECORDS)
        self.faults: list[Fault] = []
        self.purge_counts: Counter[tuple[str, str]] = Counter()
        self.status_counts: Counter[tuple[str, int]] = Counter()

    def fault_for(self, provider: str) -> Fault | None:
        now = time.monotonic()
        for fault in self.faults:
            if fault.active(now) and fault.provider in ("*", provider):
                if fault.remaining is not None:
                    fault.remaining -= 1
                return fault
        return None

    def record(self, provider: str, path: str, status: int, targets: tuple[str, ...]) -> None:
        now = time.time()
        self.calls.append(Call(provider, path, status, targets, now))
        self.status_counts[(provider, status)] += 1

    def purged(self, provider: str, kind: str, targets: tuple[str, ...]) -> None:
        now = time.time()
        for target in targets:
            self.purges.append(Purge(provider, kind, target, now))
        self.purge_counts[(provider, kind)] += len(targets)


STATE: web.AppKey[SimulatorState] = web.AppKey("state", SimulatorState)


def _fastly_error(status: int, message: str) -> web.Response:
    return web.json_response({"msg": message}, status=status)


def _cloudflare_error(status: int, code: int, message: str) -> web.Response:
    body = {"success": False, "errors": [{"code": code, "message": message}], "messages": []}
    return web.json_response(body, status=status)


def _fault_response(fault: Fault, provider: str) -> web.Response:
    message = "Too Many Requests" if fault.status == 429 else "simulated failure"
    response = (
        _fastly_error(fault.status, message)
        if provider == "fastly"
        else _cloudflare_error(fault.status, 971 if fault.status == 429 else 10000, message)
    )
    if fault.retry_after is not None:
        response.headers["Retry-After"] = fault.retry_after
    return response


async def _json_body(request: web.Request) -> Any:
    if not request.can_read_body:
        return None
    try:
        return await request.json()
    except ValueError:
        return None


async def fastly_keys(request: web.Request) -> web.Response:
    state = request.app[STATE]
    path = request.path
    if not request.headers.get("Fastly-Key"):
        state.record("fastly", path, 401, ())
        return _fastly_error(401, "Provided credentials are missing or invalid")
    body = await _json_body(request)
    keys: list[Any] = []
    if isinstance(body, dict) and isinstance(body.get("surrogate_keys"), list):
        keys = body["surrogate_keys"]
    elif request.headers.get("Surrogate-Key"):
        keys = request.headers["Surrogate-Key"].split()
    if not keys or len(keys) > FASTLY_BATCH or not all(isinstance(k, str) and k for k in keys):
        state.record("fastly", path, 400, ())
        return _fastly_error(400, f"give 1 to {FASTLY_BATCH} surrogate keys as strings")
    targets = tuple(keys)
    fault = state.fault_for("fastly")
    if fault is not None:
        state.record("fastly", path, fault.status, targets)
        return _fault_response(fault, "fastly")
    state.record("fastly", path, 200, targets)
    state.purged("fastly", "tag", targets)
    return web.json_response({key: uuid.uuid4().hex[:16] for key in targets})


async def fastly_url(request: web.Request) -> web.Response:
    state = request.app[STATE]
    target = request.match_info["url"] + (
        f"?{request.query_string}" if request.query_string else ""
    )
    if not request.headers.get("Fastly-Key"):
        state.record("fastly", request.path, 401, (target,))
        return _fastly_error(401, "Provided credentials are missing or invalid")
    fault = state.fault_for("fastly")
    if fault is not None:
        state.record("fastly", request.path, fault.status, (target,))
        return _fault_response(fault, "fastly")
    state.record("fastly", request.path, 200, (target,))
    state.purged("fastly", "url", (target,))
    return web.json_response({"status": "ok", "id": uuid.uuid4().hex[:16]})


async def cloudflare_purge(request: web.Request) -> web.Response:
    state = request.app[STATE]
    path = request.path
    if not request.headers.get("Authorization", "").startswith("Bearer "):
        state.record("cloudflare", path, 400, ())
        return _cloudflare_error(400, 10000, "Authentication error")
    body = await _json_body(request)
    kinds = [k for k in ("files", "tags") if isinstance(body, dict) and k in body]
    if len(kinds) != 1:
        state.record("cloudflare", path, 400, ())
        return _cloudflare_error(400, 1012, "give exactly one of files or tags")
    assert isinstance(body, dict)
    values = body[kinds[0]]
    if (
        not isinstance(values, list)
        or not 0 < len(values) <= CLOUDFLARE_BATCH
        or not all(isinstance(v, str) and v for v in values)
    ):
        state.record("cloudflare", path, 400, ())
        return _cloudflare_error(400, 1015, f"give 1 to {CLOUDFLARE_BATCH} {kinds[0]} as strings")
    targets = tuple(values)
    fault = state.fault_for("cloudflare")
    if fault is not None:
        state.record("cloudflare", path, fault.status, targets)
        return _fault_response(fault, "cloudflare")
    state.record("cloudflare", path, 200, targets)
    state.purged("cloudflare", "url" if kinds[0] == "files" else "tag", targets)
    result = {"id": uuid.uuid4().hex}
    return web.json_response({"success": True, "errors": [], "messages": [], "result": result})


async def set_fault(request: web.Request) -> web.Response:
    body = await _json_body(request)
    if not isinstance(body, dict):
        return web.json_response({"error": "a JSON object is required"}, status=400)
    provider = body.get("provider", "*")
    status = body.get("status")
    seconds = body.get("seconds")
    count = body.get("count", 1 if seconds is None else None)
    retry_after = body.get("retry_after")
    if (
        provider not in ("*", "fastly", "cloudflare")
        or not isinstance(status, int)
        or not 400 <= status < 600
        or not (count is None or (isinstance(count, int) and count >= 1))
        or not (seconds is None or (isinstance(seconds, int | float) and seconds > 0))
        or not (retry_after is None or isinstance(retry_after, str))
    ):
        return web.json_response(
            {
                "error": "want provider (*|fastly|cloudflare), status 4xx/5xx, count >= 1 "
                "and/or seconds > 0, retry_after as a string"
            },
            status=400,
        )
    until = None if seconds is None else time.monotonic() + float(seconds)
    request.app[STATE].faults.append(Fault(provider, status, count, retry_after, until))
    return web.json_response({"ok": True})


async def clear_faults(request: web.Request) -> web.Response:
    request.app[STATE].faults.clear()
    return web.json_response({"ok": True})


async def list_purges(request: web.Request) -> web.Response:
    contains = request.query.get("contains", "")
    provider = request.query.get("provider")
    kind = request.query.get("kind")
    purges = [
        asdict(p)
        for p in request.app[STATE].purges
        if contains in p.target
        and (provider is None or p.provider == provider)
        and (kind is None or p.kind == kind)
    ]
    return web.json_response({"purges": purges})


async def list_calls(request: web.Request) -> web.Response:
    contains = request.query.get("contains", "")
    calls = [
        asdict(c)
        for c in request.app[STATE].calls
        if not contains or any(contains in t for t in c.targets)
    ]
    return web.json_response({"calls": calls})


async def stats(request: web.Request) -> web.Response:
    state = request.app[STATE]
    purges: dict[str, dict[str, int]] = {}
    for (provider, kind), count in state.purge_counts.items():
        purges.setdefault(provider, {})[kind] = count
    calls: dict[str, dict[str, int]] = {}
    for (provider, status), count in state.status_counts.items():
        calls.setdefault(provider, {})[str(status)] = count
    return web.json_response({"purges": purges, "calls": calls})


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def create_app() -> web.Application:
    app = web.Application()
    app[STATE] = SimulatorState()
    app.router.add_post("/service/{service_id}/purge", fastly_keys)
    app.router.add_post("/purge/{url:.+}", fastly_url)
    app.router.add_post("/zones/{zone_id}/purge_cache", cloudflare_purge)
    app.router.add_post("/_sim/faults", set_fault)
    app.router.add_delete("/_sim/faults", clear_faults)
    app.router.add_get("/_sim/purges", list_purges)
    app.router.add_get("/_sim/requests", list_calls)
    app.router.add_get("/_sim/stats", stats)
    app.router.add_get("/_sim/health", health)
    return app


async def start(host: str, port: int) -> web.AppRunner:
    """Serve in the running event loop (tests); `await runner.cleanup()` stops it."""
    runner = web.AppRunner(create_app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    print(f"CDN simulator on http://{args.host}:{args.port}", flush=True)
    web.run_app(create_app(), host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
