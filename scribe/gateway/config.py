"""The gateway's settings from `SCRIBE_GATEWAY_*`; service URLs come from `runtime.settings`."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from runtime.settings import SettingsError
from scribe.gateway.access import TokenBook
from scribe.gateway.api_auth import ApiAuthSettings

DEFAULT_PORT = 8080
DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_EVENTS = 5_000
DEFAULT_RATE = 1_000.0
DEFAULT_API_TIMEOUT_S = 60.0
MAX_API_TIMEOUT_S = 3_600.0


def _number(name: str, default: float, minimum: float) -> float:
    raw = os.environ.get(name) or ""
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}: {raw!r} is not a number") from None
    if not value >= minimum:
        raise SettingsError(f"{name}: {raw!r} must be at least {minimum:g}")
    return value


@dataclass(frozen=True)
class ApiSettings:
    """The OpenAI-compatible API (`/v1/chat/completions`, ...): its tokens, a per-user call
    rate, and how long a call waits for the pipeline's answer unless it asks otherwise."""

    auth: ApiAuthSettings = field(default_factory=ApiAuthSettings)
    rate: float = 10.0  # calls per second per user
    burst: int = 20
    timeout_s: float = DEFAULT_API_TIMEOUT_S

    @classmethod
    def from_env(cls) -> ApiSettings:
        return cls(
            auth=ApiAuthSettings.from_env(),
            rate=_number("SCRIBE_GATEWAY_API_RATE", 10.0, 0.001),
            burst=int(_number("SCRIBE_GATEWAY_API_BURST", 20, 1)),
            timeout_s=min(
                MAX_API_TIMEOUT_S,
                _number("SCRIBE_GATEWAY_API_TIMEOUT_S", DEFAULT_API_TIMEOUT_S, 1),
            ),
        )


@dataclass(frozen=True)
class GatewaySettings:
    tokens: TokenBook
    port: int = DEFAULT_PORT
    host: str = "127.0.0.1"
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_events: int = DEFAULT_MAX_EVENTS
    rate: float = DEFAULT_RATE  # events per second per client
    burst: int = DEFAULT_MAX_EVENTS  # tokens a client may spend at once
    ack_timeout_s: float = 30.0
    api: ApiSettings = field(default_factory=ApiSettings)

    def __post_init__(self) -> None:
        if self.burst < self.max_events:
            raise SettingsError(
                f"SCRIBE_GATEWAY_BURST ({self.burst}) must be at least SCRIBE_GATEWAY_MAX_EVENTS "
                f"({self.max_events}), or a full batch could never pass the rate limit"
            )

    @classmethod
    def from_env(cls) -> GatewaySettings:
        env = os.environ
        tokens_file = env.get("SCRIBE_GATEWAY_TOKENS_FILE") or ""
        file_text = ""
        if tokens_file:
            try:
                file_text = Path(tokens_file).read_text()
            except OSError as exc:
                raise SettingsError(
                    f"SCRIBE_GATEWAY_TOKENS_FILE: cannot read {tokens_file}: {exc.strerror}"
                ) from None
        tokens = TokenBook.parse(env.get("SCRIBE_GATEWAY_TOKENS", ""), file_text, tokens_file)
        max_events = int(_number("SCRIBE_GATEWAY_MAX_EVENTS", DEFAULT_MAX_EVENTS, 1))
        return cls(
            tokens=tokens,
            port=int(_number("SCRIBE_GATEWAY_PORT", DEFAULT_PORT, 0)),
            host=env.get("SCRIBE_GATEWAY_HOST") or "127.0.0.1",
            max_body_bytes=int(_number("SCRIBE_GATEWAY_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES, 1)),
            max_events=max_events,
            rate=_number("SCRIBE_GATEWAY_RATE", DEFAULT_RATE, 0.001),
            burst=int(_number("SCRIBE_GATEWAY_BURST", max(DEFAULT_MAX_EVENTS, max_events), 1)),
            ack_timeout_s=_number("SCRIBE_GATEWAY_ACK_TIMEOUT_S", 30.0, 0.1),
            api=ApiSettings.from_env(),
        )
