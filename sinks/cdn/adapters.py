"""The purge APIs' request shapes. Pure: an adapter turns targets into HTTP calls (each at most
that API's batch size) and reads an API-level error out of a response body.

- Fastly: surrogate keys in bulk, `POST /service/{id}/purge` with `{"surrogate_keys": [...]}`
  (at most 256 per call); a URL with `POST /purge/{host/path}` (one per call). Auth:
  `Fastly-Key`.
- Cloudflare: `POST /zones/{zone}/purge_cache` with `{"files": [...]}` or `{"tags": [...]}`
  (at most 30 per call on non-Enterprise plans). Auth: `Authorization: Bearer`. A 200 answer
  can still carry `"success": false`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import orjson


class Provider(StrEnum):
    FASTLY = "fastly"
    CLOUDFLARE = "cloudflare"


class PurgeKind(StrEnum):
    URL = "url"
    TAG = "tag"


class Outcome(StrEnum):
    OK = "ok"
    RATE_LIMITED = "rate_limited"
    SERVER_ERROR = "server_error"
    CLIENT_ERROR = "client_error"
    TRANSPORT_ERROR = "transport_error"

    @property
    def retryable(self) -> bool:
        return self in (Outcome.RATE_LIMITED, Outcome.SERVER_ERROR, Outcome.TRANSPORT_ERROR)


def classify(status: int) -> Outcome:
    if 200 <= status < 300:
        return Outcome.OK
    if status == 429:
        return Outcome.RATE_LIMITED
    if status == 408 or status >= 500:
        return Outcome.SERVER_ERROR
    return Outcome.CLIENT_ERROR


@dataclass(frozen=True)
class PurgeCall:
    """A POST (every purge API here takes one) to `path`, with `json` as its body."""

    provider: Provider
    kind: PurgeKind
    targets: tuple[str, ...]
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    json: dict[str, Any] | None = None


def _chunks(values: list[str], size: int) -> list[tuple[str, ...]]:
    return [tuple(values[i : i + size]) for i in range(0, len(values), size)]


class Adapter(ABC):
    provider: Provider
    batch_sizes: dict[PurgeKind, int]

    def calls(self, kind: PurgeKind, targets: list[str]) -> list[PurgeCall]:
        unique = list(dict.fromkeys(targets))
        return [self._call(kind, batch) for batch in _chunks(unique, self.batch_sizes[kind])]

    @abstractmethod
    def _call(self, kind: PurgeKind, batch: tuple[str, ...]) -> PurgeCall: ...

    @abstractmethod
    def error_in(self, body: bytes) -> str | None:
        """The API-level error a successful HTTP status still reports, if any."""


class FastlyAdapter(Adapter):
    provider = Provider.FASTLY
    batch_sizes = {PurgeKind.TAG: 256, PurgeKind.URL: 1}

    def __init__(self, token: str, service_id: str) -> None:
        self.token = token
        self.service_id = service_id

    def _call(self, kind: PurgeKind, batch: tuple[str, ...]) -> PurgeCall:
        headers = {"Fastly-Key": self.token, "Accept": "application/json"}
        if kind is PurgeKind.TAG:
            return PurgeCall(
                self.provider,
                kind,
                batch,
                f"/service/{self.service_id}/purge",
                headers,
                {"surrogate_keys": list(batch)},
            )
        (url,) = batch
        return PurgeCall(self.provider, kind, batch, f"/purge/{_without_scheme(url)}", headers)

    def error_in(self, body: bytes) -> str | None:
        data = _json(body)
        if isinstance(data, dict) and data.get("status") not in (None, "ok"):
            return f"fastly answered status {data.get('status')!r}"
        return None


class CloudflareAdapter(Adapter):
    provider = Provider.CLOUDFLARE
    batch_sizes = {PurgeKind.URL: 30, PurgeKind.TAG: 30}

    def __init__(self, token: str, zone_id: str) -> None:
        self.token = token
        self.zone_id = zone_id

    def _call(self, kind: PurgeKind, batch: tuple[str, ...]) -> PurgeCall:
        field_name = "files" if kind is PurgeKind.URL else "tags"
        return PurgeCall(
            self.provider,
            kind,
            batch,
            f"/zones/{self.zone_id}/purge_cache",
            {"Authorization": f"Bearer {self.token}"},
            {field_name: list(batch)},
        )

    def error_in(self, body: bytes) -> str | None:
        data = _json(body)
        if isinstance(data, dict) and data.get("success") is False:
            errors = data.get("errors") or []
            messages = [str(e.get("message", e)) if isinstance(e, dict) else str(e) for e in errors]
            return "cloudflare answered success=false: " + ("; ".join(messages) or "no reason")
        return None


def _without_scheme(url: str) -> str:
    return url.split("://", 1)[1] if "://" in url else url


def _json(body: bytes) -> Any:
    try:
        return orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return None
