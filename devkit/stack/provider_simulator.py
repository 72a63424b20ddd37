"""A local HTTP server that answers in the shapes of OpenRouter and Gemini, so the router is
exercised over real HTTP without real keys.

- `POST /api/v1/chat/completions` (OpenRouter, OpenAI-compatible; `modalities` with "image" asks
  for an image): `choices[0].message` and `usage.{prompt_tokens, completion_tokens, cost}`.
- `POST /v1beta/models/{model}:generateContent` (Gemini, key in `x-goog-api-key`):
  `candidates[0].content.parts` and `usageMetadata.{promptTokenCount, candidatesTokenCount}`.

Faults come from rules (`POST /_sim/rules`) or from markers in the prompt:
`[sim:429]` or `[sim:429 retry=2]` (OpenRouter sends Retry-After, Gemini RetryInfo.retryDelay),
`[sim:500]`, `[sim:503]`, `[sim:timeout]` (holds the request `timeout_hold_s`), `[sim:slow=800]`
(answers after 800 ms), `[sim:fail=2]` (the first 2 calls with this prompt answer 500).
A rule's `malformed` action answers 200 in the provider's content type with a body that is not
the expected shape (invalid JSON, no choices/candidates, wrong types inside), one of
`MALFORMED` per call in turn; a rule's `every: 3` applies it to every third call it matches.

Every call is logged (`GET /_sim/calls`) with the key's id, never the key. `POST /_sim/reset`
clears calls and rules; `POST /_sim/config` sets `delay_ms` (every answer) and `timeout_hold_s`.

Run: `python -m devkit.stack.provider_simulator --port 8900`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import re
import time
from collections import Counter, deque
from dataclasses import asdict, dataclass, field
from typing import Any

from aiohttp import web

# A valid 1x1 PNG, the image every image request gets.
PIXEL_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
MARKER = re.compile(r"\[sim:([a-z0-9]+)(?:[ =]([^\]]*))?\]")
MAX_LOGGED_CALLS = 200_000
ACTIONS = ("429", "500", "503", "timeout", "slow", "malformed")
IMAGE_OUTPUT_TOKENS = 1290


def key_fingerprint(service: str, secret: str) -> str:
    """The same id the router gives a key (agents.router.keys.key_id)."""
    return f"{service}:{hashlib.sha256(secret.encode()).hexdigest()[:10]}"


@dataclass
class Rule:
    """Answer matching calls with `action` (429, 500, 503, timeout, slow, malformed) `times`
    times (None: until the rules change); with `every` > 1, only every `every`-th matching call
    (the others pass by)."""

    action: str
    provider: str | None = None
    model: str | None = None
    key_id: str | None = None
    prompt_contains: str | None = None
    retry_after_s: float = 1.0
    delay_ms: int = 0
    times: int | None = None
    every: int = 1
    seen: int = field(default=0, init=False)  # matching calls so far (for `every`)

    def matches(self, call: CallRecord, prompt: str) -> bool:
        return (
            (self.provider is None or self.provider == call.provider)
            and (self.model is None or self.model == call.model)
            and (self.key_id is None or self.key_id == call.key_id)
            and (self.prompt_contains is None or self.prompt_contains in prompt)
        )


@dataclass
class CallRecord:
    index: int
    provider: str
    model: str
    key_id: str
    kind: str
    started: float
    prompt_tag: str
    status: int = 0
    finished: float = 0.0


@dataclass
class SimulatorState:
    rules: list[Rule] = field(default_factory=list)
    calls: deque[CallRecord] = field(default_factory=lambda: deque(maxlen=MAX_LOGGED_CALLS))
    seen_prompts: Counter[str] = field(default_factory=Counter)
    delay_ms: int = 0
    timeout_hold_s: float = 30.0
    next_index: int = 0


def _prompt_tag(prompt: str) -> str:
    """A short tag to find a test's calls: the text of a `[tag:...]` marker, else a hash."""
    match = re.search(r"\[tag:([^\]]+)\]", prompt)
    return match.group(1) if match else hashlib.sha256(prompt.encode()).hexdigest()[:12]


def _fault_from_prompt(state: SimulatorState, prompt: str) -> Rule | None:
    for name, argument in MARKER.findall(prompt):
        if name in ("429", "500", "503"):
            retry = re.search(r"retry=(\d+(?:\.\d+)?)", argument or "")
            return Rule(action=name, retry_after_s=float(retry.group(1)) if retry else 1.0)
        if name == "timeout":
            return Rule(action="timeout")
        if name == "slow":
            return Rule(action="slow", delay_ms=int(argument or "1000"))
        if name == "fail":
            key = hashlib.sha256(prompt.encode()).hexdigest()
            state.seen_prompts[key] += 1
            if state.seen_prompts[key] <= int(argument or "1"):
                return Rule(action="500")
    return None


def _fault(state: SimulatorState, call: CallRecord, prompt: str) -> Rule | None:
    for rule in state.rules:
        if rule.matches(call, prompt) and (rule.times is None or rule.times > 0):
            rule.seen += 1
            if rule.seen % max(1, rule.every):
                continue
            if rule.times is not None:
                rule.times -= 1
            return rule
    return _fault_from_prompt(state, prompt)


def _error(call: CallRecord, rule: Rule) -> web.Response:
    status = int(rule.action)
    if call.provider == "gemini":
        body: dict[str, Any] = {
            "error": {
                "code": status,
                "message": "Resource has been exhausted (e.g. check quota)."
                if status == 429
                else "The service is currently unavailable.",
                "status": "RESOURCE_EXHAUSTED" if status == 429 else "UNAVAILABLE",
            }
        }
        if status == 429:
            body["error"]["details"] = [
                {
                    "@type": "type.googleapis.com/google.rpc.RetryInfo",
                    "retryDelay": f"{rule.retry_after_s:g}s",
                }
            ]
        return web.json_response(body, status=status)
    headers = {"Retry-After": f"{rule.retry_after_s:g}"} if status == 429 else {}
    message = "Rate limit exceeded: free-models-per-min" if status == 429 else "Upstream error"
    return web.json_response(
        {"error": {"code": status, "message": message}}, status=status, headers=headers
    )


# Bodies a broken provider might send with a 200, per provider: each must be a failed attempt
# with a clear reason, never a crash and never a silent success. Raw bytes, sent as JSON.
MALFORMED: dict[str, tuple[bytes, ...]] = {
    "openrouter": (
        b'{"id": "gen-sim", "choices": [{"message": {"content": "cut off',  # invalid JSON
        b'{"id": "gen-sim", "object": "chat.completion"}',  # no choices
        b'{"choices": [{"index": 0, "message": "Simulated reply"}]}',  # message not an object
        b'{"choices": [{"message": {"content": {"text": "Simulated"}}}]}',  # content not text
        b'{"choices": [{"message": {"content": "Simulated"}}], "usage": {"cost": "a lot"}}',
    ),
    "gemini": (
        b'{"candidates": [{"content": {"parts": [{"text": "cut off',  # invalid JSON
        b'{"modelVersion": "gemini-sim"}',  # no candidates
        b'{"candidates": [{"content": {"parts": 7}}]}',  # parts not a list
        b'{"candidates": [{"content": {"parts": [{"text": 42}]}}]}',  # no text in the parts
        b'{"candidates": [{"content": {"parts": [{"text": "Hi"}]}}], "usageMetadata": [1, 2]}',
    ),
}


def _malformed(call: CallRecord) -> web.Response:
    shapes = MALFORMED[call.provider]
    return web.Response(
        body=shapes[call.index % len(shapes)], status=200, content_type="application/json"
    )


def _usage_counts(prompt: str, max_tokens: int, image: bool) -> tuple[int, int]:
    prompt_tokens = max(1, len(prompt) // 4)
    if image:
        return prompt_tokens, IMAGE_OUTPUT_TOKENS
    return prompt_tokens, max(1, min(max_tokens, 20 + len(prompt) // 8))


def _openrouter_reply(call: CallRecord, prompt: str, payload: dict[str, Any]) -> dict[str, Any]:
    image = call.kind == "image"
    prompt_tokens, completion_tokens = _usage_counts(
        prompt, int(payload.get("max_tokens") or 1024), image
    )
    message: dict[str, Any] = {"role": "assistant", "content": f"Simulated reply to: {prompt[:80]}"}
    if image:
        data_url = "data:image/png;base64," + base64.b64encode(PIXEL_PNG).decode()
        message["images"] = [{"type": "image_url", "image_url": {"url": data_url}}]
    usage: dict[str, Any] = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    if call.model.endswith(":free"):
        usage["cost"] = 0
    return {
        "id": f"gen-sim-{call.index}",
        "object": "chat.completion",
        "model": call.model,
        "choices": [{"index": 0, "finish_reason": "stop", "message": message}],
        "usage": usage,
    }


def _gemini_reply(call: CallRecord, prompt: str, payload: dict[str, Any]) -> dict[str, Any]:
    image = call.kind == "image"
    config = payload.get("generationConfig") or {}
    prompt_tokens, output_tokens = _usage_counts(
        prompt, int(config.get("maxOutputTokens") or 1024), image
    )
    parts: list[dict[str, Any]] = [{"text": f"Simulated reply to: {prompt[:80]}"}]
    if image:
        parts.append(
            {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(PIXEL_PNG).decode()}}
        )
    return {
        "candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP"}],
        "usageMetadata": {
            "promptTokenCount": prompt_tokens,
            "candidatesTokenCount": output_tokens,
            "totalTokenCount": prompt_tokens + output_tokens,
        },
        "modelVersion": call.model,
    }


class ProviderSimulator:
    def __init__(self) -> None:
        self.state = SimulatorState()

    def app(self) -> web.Application:
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_post("/api/v1/chat/completions", self.openrouter)
        app.router.add_post("/v1beta/models/{target}", self.gemini)
        app.router.add_get("/_sim/calls", self.calls)
        app.router.add_post("/_sim/rules", self.set_rules)
        app.router.add_post("/_sim/reset", self.reset)
        app.router.add_post("/_sim/config", self.configure)
        app.router.add_get("/health", self.health)
        return app

    async def openrouter(self, request: web.Request) -> web.Response:
        payload = await request.json()
        secret = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        messages = payload.get("messages") or [{}]
        prompt = _text_of(messages[-1].get("content"))
        kind = "image" if "image" in (payload.get("modalities") or []) else "text"
        call = self._record("openrouter", str(payload.get("model", "")), secret, kind, prompt)
        return await self._answer(call, prompt, lambda: _openrouter_reply(call, prompt, payload))

    async def gemini(self, request: web.Request) -> web.Response:
        model, _, action = request.match_info["target"].partition(":")
        if action != "generateContent":
            return web.json_response({"error": {"code": 404, "message": "not found"}}, status=404)
        payload = await request.json()
        contents = payload.get("contents") or [{}]
        prompt = "".join(_text_of(part.get("text")) for part in contents[-1].get("parts", []))
        modalities = (payload.get("generationConfig") or {}).get("responseModalities") or []
        kind = "image" if "IMAGE" in modalities else "text"
        secret = request.headers.get("x-goog-api-key", "")
        call = self._record("gemini", model, secret, kind, prompt)
        return await self._answer(call, prompt, lambda: _gemini_reply(call, prompt, payload))

    def _record(self, provider: str, model: str, secret: str, kind: str, prompt: str) -> CallRecord:
        state = self.state
        call = CallRecord(
            index=state.next_index,
            provider=provider,
            model=model,
            key_id=key_fingerprint(provider, secret),
            kind=kind,
            started=time.time(),
            prompt_tag=_prompt_tag(prompt),
        )
        state.next_index += 1
        state.calls.append(call)
        return call

    async def _answer(self, call: CallRecord, prompt: str, reply: Any) -> web.Response:
        rule = _fault(self.state, call, prompt)
        delay_ms = self.state.delay_ms + (rule.delay_ms if rule and rule.action == "slow" else 0)
        try:
            if rule is not None and rule.action == "timeout":
                await asyncio.sleep(self.state.timeout_hold_s)
                response = web.json_response(
                    {"error": {"code": 504, "message": "timed out"}}, status=504
                )
            else:
                if delay_ms:
                    await asyncio.sleep(delay_ms / 1000)
                if rule is not None and rule.action in ("429", "500", "503"):
                    response = _error(call, rule)
                elif rule is not None and rule.action == "malformed":
                    response = _malformed(call)
                else:
                    response = web.json_response(reply())
        finally:
            call.finished = time.time()
        call.status = response.status
        return response

    async def calls(self, request: web.Request) -> web.Response:
        since = int(request.query.get("since", "0"))
        return web.json_response([asdict(c) for c in self.state.calls if c.index >= since])

    async def set_rules(self, request: web.Request) -> web.Response:
        payload = await request.json()
        try:
            rules = [Rule(**raw) for raw in payload.get("rules", [])]
        except TypeError as exc:
            return web.json_response({"error": f"bad rule: {exc}"}, status=400)
        for rule in rules:
            if rule.action not in ACTIONS or rule.every < 1:
                return web.json_response(
                    {"error": f"bad rule: action one of {', '.join(ACTIONS)}, every >= 1"},
                    status=400,
                )
        self.state.rules = rules
        return web.json_response({"rules": len(self.state.rules)})

    async def reset(self, request: web.Request) -> web.Response:
        self.state = SimulatorState(next_index=self.state.next_index)
        return web.json_response({"reset": True, "next_index": self.state.next_index})

    async def configure(self, request: web.Request) -> web.Response:
        payload = await request.json()
        self.state.delay_ms = int(payload.get("delay_ms", self.state.delay_ms))
        self.state.timeout_hold_s = float(payload.get("timeout_hold_s", self.state.timeout_hold_s))
        return web.json_response(
            {"delay_ms": self.state.delay_ms, "timeout_hold_s": self.state.timeout_hold_s}
        )

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "healthy"})


def _text_of(content: Any) -> str:
    """Message content as text: a string, or OpenAI-style parts `[{"type": "text", ...}]`."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def main() -> None:
    parser = argparse.ArgumentParser(description="Provider simulator (OpenRouter + Gemini)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8900)
    args = parser.parse_args()
    web.run_app(ProviderSimulator().app(), host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()
