"""Provider clients, one connection pool per provider (`runtime.http.JsonPoster`): OpenRouter's
OpenAI-compatible chat completions (text, and images through `modalities`) and Gemini's
generateContent. Responses are parsed with exact decimals, so a reported cost stays exact.

Errors are `ProviderError`s that name what happened (rate limited, server error, timeout,
refused, malformed answer) and never carry the key.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import Any, Protocol

import httpx

from agents.router.keys import ProviderKey
from runtime.http import JsonPoster
from schemas import DecodeError, parse_json
from schemas.events import RequestKind

MAX_ERROR_TEXT = 200
DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")
DATA_URL = re.compile(r"^data:(?P<mime>[\w/+.-]+);base64,(?P<data>.*)$", re.S)


class Failure(StrEnum):
    RATE_LIMITED = "rate_limited"  # 429: the key rests, another key is tried
    SERVER = "server"  # 5xx or a connection error: retried, counts against the breaker
    TIMEOUT = "timeout"  # retried, counts against the breaker
    REFUSED = "refused"  # another 4xx: the next model is tried
    # A 2xx answer we cannot read: the next model is tried, and it counts against the breaker
    # (a provider answering garbage is failing, however fast it answers).
    MALFORMED = "malformed"


class ProviderError(Exception):
    def __init__(
        self, failure: Failure, message: str, status: int | None = None, retry_after_s: float = 0
    ) -> None:
        super().__init__(message)
        self.failure = failure
        self.status = status
        self.retry_after_s = retry_after_s

    @property
    def counts_against_model(self) -> bool:
        return self.failure in (Failure.SERVER, Failure.TIMEOUT, Failure.MALFORMED)


@dataclass(frozen=True)
class Reply:
    text: str | None
    image: bytes | None
    image_type: str | None
    input_tokens: int
    output_tokens: int
    images: int
    reported_cost_usd: Decimal | None


@dataclass(frozen=True)
class Call:
    model: str
    kind: RequestKind
    prompt: str
    max_output_tokens: int
    timeout_s: float


class Provider(Protocol):
    service: str
    operation: str  # what the call is, in OpenTelemetry's GenAI terms (`gen_ai.operation.name`)

    async def complete(self, call: Call, key: ProviderKey) -> Reply: ...

    async def aclose(self) -> None: ...


def retry_after_seconds(
    headers: Mapping[str, str], body: Any, now: datetime | None = None
) -> float:
    """Seconds to rest a key after a 429: the Retry-After header (seconds or an HTTP date), or
    Gemini's `RetryInfo.retryDelay` ("3s", "0.5s") in the error details; 0 when neither."""
    header = headers.get("retry-after")
    if header:
        header = header.strip()
        try:
            return max(0.0, float(header))
        except ValueError:
            pass
        try:
            when = parsedate_to_datetime(header)
        except (TypeError, ValueError):
            when = None
        if when is not None:
            return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
    details = body.get("error", {}).get("details", []) if isinstance(body, dict) else []
    for detail in details if isinstance(details, list) else []:
        if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("RetryInfo"):
            match = DURATION.match(str(detail.get("retryDelay", "")))
            if match:
                return float(match.group(1))
    return 0.0


def _tokens(usage: dict[str, Any], where: str, name: str) -> int:
    """A reported token count: a non-negative integer, or absent (0)."""
    value = usage.get(name)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _malformed(f"answer's {where}.{name} {str(value)[:40]!r} is not a token count")
    return value


def _decode_image(url: str) -> tuple[bytes, str]:
    match = DATA_URL.match(url)
    if not match:
        raise _malformed("image answer is not a base64 data URL")
    try:
        return base64.b64decode(match.group("data"), validate=True), match.group("mime")
    except binascii.Error:
        raise _malformed("image answer has invalid base64 data") from None


def _malformed(message: str) -> ProviderError:
    return ProviderError(Failure.MALFORMED, message)


def _refused(message: str) -> ProviderError:
    """An answer of the right shape without what was asked for (e.g. a safety block)."""
    return ProviderError(Failure.REFUSED, message)


def _object(value: Any, where: str) -> dict[str, Any]:
    """`value` when it is a JSON object (absent: empty); otherwise the answer is unreadable."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _malformed(f"answer's {where} is a {type(value).__name__}, not an object")
    return value


def _text(value: Any, where: str) -> str | None:
    if value is None or isinstance(value, str):
        return value or None
    raise _malformed(f"answer's {where} is a {type(value).__name__}, not text")


def _cost(value: Any) -> Decimal | None:
    """A reported cost in USD: a finite, non-negative number, or absent."""
    if value is None:
        return None
    try:
        cost = Decimal(value) if isinstance(value, Decimal | int | str) else None
    except ArithmeticError:
        cost = None
    if isinstance(value, bool) or cost is None or not cost.is_finite() or cost < 0:
        raise _malformed(f"answer's usage.cost {str(value)[:40]!r} is not a cost in USD")
    return cost


def _answered(text: str | None, image: bytes | None, kind: RequestKind) -> None:
    """An answer must carry what was asked for: an image, or some text."""
    if kind is RequestKind.IMAGE and image is None:
        raise _refused("image request answered without an image")
    if kind is RequestKind.TEXT and text is None:
        raise _refused("text request answered without text")


def parse_openrouter(body: Any, kind: RequestKind) -> Reply:
    """`choices[0].message.content` or `.images[0].image_url.url`; `usage.prompt_tokens`,
    `usage.completion_tokens` and `usage.cost` (USD, when reported). An answer of another
    shape is malformed, one without what was asked is refused; either says why."""
    try:
        message = body["choices"][0]["message"]
    except (KeyError, IndexError, TypeError):
        raise _refused("answer has no choices[0].message") from None
    message = _object(message, "choices[0].message")
    usage = _object(body.get("usage"), "usage")
    text = _text(message.get("content"), "choices[0].message.content")
    image = image_type = None
    if kind is RequestKind.IMAGE:
        images = message.get("images") or []
        first = images[0] if isinstance(images, list) and images else None
        if first is not None:
            url = _object(_object(first, "images[0]").get("image_url"), "images[0].image_url")
            image, image_type = _decode_image(str(url.get("url", "")))
    _answered(text, image, kind)
    return Reply(
        text=text,
        image=image,
        image_type=image_type,
        input_tokens=_tokens(usage, "usage", "prompt_tokens"),
        output_tokens=_tokens(usage, "usage", "completion_tokens"),
        images=1 if image is not None else 0,
        reported_cost_usd=_cost(usage.get("cost")),
    )


def parse_gemini(body: Any, kind: RequestKind) -> Reply:
    """`candidates[0].content.parts[]` (text, or `inlineData` for an image);
    `usageMetadata.promptTokenCount` and `.candidatesTokenCount`. An answer of another shape is
    malformed, one without what was asked is refused; either says why."""
    try:
        parts = body["candidates"][0]["content"]["parts"]
    except (KeyError, IndexError, TypeError):
        raise _refused("answer has no candidates[0].content.parts") from None
    if not isinstance(parts, list):
        raise _malformed(f"answer's candidates[0].content.parts is a {type(parts).__name__}")
    texts = [p["text"] for p in parts if isinstance(p, dict) and isinstance(p.get("text"), str)]
    image = image_type = None
    inline = [p["inlineData"] for p in parts if isinstance(p, dict) and "inlineData" in p]
    if inline:
        data = _object(inline[0], "inlineData")
        try:
            image = base64.b64decode(str(data.get("data", "")), validate=True)
        except binascii.Error:
            raise _malformed("image answer has invalid base64 data") from None
        image_type = str(data.get("mimeType", "image/png"))
    text = "".join(texts) or None
    _answered(text, image, kind)
    usage = _object(body.get("usageMetadata"), "usageMetadata")
    return Reply(
        text=text,
        image=image,
        image_type=image_type,
        input_tokens=_tokens(usage, "usageMetadata", "promptTokenCount"),
        output_tokens=_tokens(usage, "usageMetadata", "candidatesTokenCount"),
        images=1 if image is not None else 0,
        reported_cost_usd=None,
    )


def _error_text(body: Any, raw: bytes) -> str:
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        message = body["error"].get("message")
        if isinstance(message, str):
            return message[:MAX_ERROR_TEXT]
    return raw[:MAX_ERROR_TEXT].decode(errors="replace")


class _HttpProvider:
    service: str
    operation: str

    def __init__(self, base_url: str, max_connections: int = 100) -> None:
        self.http = JsonPoster(base_url, max_connections)

    async def aclose(self) -> None:
        await self.http.aclose()

    async def _post(
        self,
        path: str,
        payload: dict[str, Any],
        headers: dict[str, str],
        call: Call,
        key: ProviderKey,
    ) -> Any:
        try:
            response = await self.http.post(path, payload, headers, call.timeout_s)
        except httpx.TimeoutException:
            raise ProviderError(
                Failure.TIMEOUT, f"{self.service} did not answer within {call.timeout_s:.1f} s"
            ) from None
        except httpx.TransportError as exc:
            raise ProviderError(
                Failure.SERVER, f"{self.service} unreachable: {type(exc).__name__}"
            ) from None
        raw = response.content
        try:
            body = parse_json(raw) if raw else None
        except DecodeError:
            body = None
        status = response.status
        # A provider that echoes the key in an error must not put it in our logs or responses.
        detail = _error_text(body, raw).replace(key.secret, key.id)
        if status == 429:
            raise ProviderError(
                Failure.RATE_LIMITED,
                f"{self.service} rate limited the key: {detail}",
                status,
                retry_after_seconds(response.headers, body),
            )
        if status >= 500:
            raise ProviderError(
                Failure.SERVER, f"{self.service} answered {status}: {detail}", status
            )
        if status >= 400:
            raise ProviderError(
                Failure.REFUSED, f"{self.service} refused ({status}): {detail}", status
            )
        if not isinstance(body, dict):
            raise _malformed(f"{self.service} answered {status} without a JSON object")
        return body


class OpenRouter(_HttpProvider):
    service = "openrouter"
    operation = "chat"

    async def complete(self, call: Call, key: ProviderKey) -> Reply:
        payload: dict[str, Any] = {
            "model": call.model,
            "messages": [{"role": "user", "content": call.prompt}],
            "usage": {"include": True},
        }
        if call.kind is RequestKind.IMAGE:
            payload["modalities"] = ["image", "text"]
        else:
            payload["max_tokens"] = call.max_output_tokens
        body = await self._post(
            "/api/v1/chat/completions",
            payload,
            {"Authorization": f"Bearer {key.secret}"},
            call,
            key,
        )
        return parse_openrouter(body, call.kind)


class Gemini(_HttpProvider):
    service = "gemini"
    operation = "generate_content"

    async def complete(self, call: Call, key: ProviderKey) -> Reply:
        config: dict[str, Any] = {}
        if call.kind is RequestKind.IMAGE:
            config["responseModalities"] = ["TEXT", "IMAGE"]
        else:
            config["maxOutputTokens"] = call.max_output_tokens
        payload = {
            "contents": [{"role": "user", "parts": [{"text": call.prompt}]}],
            "generationConfig": config,
        }
        body = await self._post(
            f"/v1beta/models/{call.model}:generateContent",
            payload,
            {"x-goog-api-key": key.secret},
            call,
            key,
        )
        return parse_gemini(body, call.kind)
