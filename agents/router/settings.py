"""The router's configuration, read from the environment.

Providers: real keys (`OPENROUTER_API_KEYS`, `GEMINI_API_KEYS`, comma-separated) send calls to the
real services; `SCRIBE_OPENROUTER_URL` / `SCRIBE_GEMINI_URL` override a base URL. A provider with
no keys sends every call to the provider simulator (`SCRIBE_PROVIDER_URL`, printed by
`scribe stack up`) with simulated keys. Per-key account limits default to the real services'
limits, or, for calls that go to the simulator, high enough that a 1,000-request test never
waits on them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

from agents.router.lanes import OffPeak
from runtime.settings import SettingsError

OPENROUTER = "openrouter"
GEMINI = "gemini"
REAL_BASE_URLS = {
    OPENROUTER: "https://openrouter.ai",
    GEMINI: "https://generativelanguage.googleapis.com",
}
# Real account limits per key: OpenRouter's free tier is 20 requests/minute and 50 requests/day
# (1,000 with credits); Gemini's depend on the project's tier, so these are conservative.
REAL_LIMITS = {OPENROUTER: (20, 50), GEMINI: (1_000, 10_000)}
SIMULATED_LIMITS = (600_000, 100_000_000)


@dataclass(frozen=True)
class ProviderSettings:
    service: str
    base_url: str
    keys: tuple[str, ...] = field(repr=False)
    requests_per_minute: int
    requests_per_day: int
    simulated: bool


@dataclass(frozen=True)
class RouterSettings:
    providers: Mapping[str, ProviderSettings]
    free_images_per_day: int = 1000
    over_budget: str = "downgrade"
    default_budget_usd: Decimal | None = None
    max_output_tokens: int = 1024
    idempotency_window_s: int = 3600
    call_timeout_s: float = 30.0
    default_deadline_s: float = 120.0
    attempts_per_model: int = 3
    backoff_base_s: float = 0.2
    backoff_cap_s: float = 5.0
    breaker_failure_rate: float = 0.5
    breaker_min_calls: int = 5
    breaker_window_s: float = 30.0
    breaker_cooldown_s: float = 30.0
    urgent_concurrency: int = 64
    normal_concurrency: int = 32
    deferred_concurrency: int = 8
    deferred_rate_per_s: float = 20.0
    deferred_max_held: int = 50_000
    offpeak: OffPeak | None = None
    promote_before_s: float = 60.0
    image_ttl_s: int = 86_400
    image_url_base: str | None = None
    budget_state_topic: str = "budget.state"
    # Decide hands urgent and normal requests to the lanes in its worker (agents.router.express).
    express: bool = True

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> RouterSettings:
        env = os.environ if env is None else env
        reader = _Reader(env)
        simulator = env.get("SCRIBE_PROVIDER_URL") or None
        providers = {}
        for service, keys_var, url_var, rpm_var, rpd_var in (
            (
                OPENROUTER,
                "OPENROUTER_API_KEYS",
                "SCRIBE_OPENROUTER_URL",
                "SCRIBE_OPENROUTER_KEY_RPM",
                "SCRIBE_OPENROUTER_KEY_RPD",
            ),
            (
                GEMINI,
                "GEMINI_API_KEYS",
                "SCRIBE_GEMINI_URL",
                "SCRIBE_GEMINI_KEY_RPM",
                "SCRIBE_GEMINI_KEY_RPD",
            ),
        ):
            keys = tuple(k.strip() for k in env.get(keys_var, "").split(",") if k.strip())
            base_url = env.get(url_var) or (REAL_BASE_URLS[service] if keys else simulator)
            if base_url is None:
                continue
            base_url = base_url.rstrip("/")
            simulated = simulator is not None and base_url == simulator.rstrip("/")
            if not keys:
                count = reader.whole("SCRIBE_SIMULATED_KEYS", 3)
                keys = tuple(f"sim-{service}-key-{n}" for n in range(1, count + 1))
            rpm, rpd = SIMULATED_LIMITS if simulated else REAL_LIMITS[service]
            providers[service] = ProviderSettings(
                service=service,
                base_url=base_url,
                keys=keys,
                requests_per_minute=reader.whole(rpm_var, rpm),
                requests_per_day=reader.whole(rpd_var, rpd),
                simulated=simulated,
            )
        over_budget = env.get("SCRIBE_ROUTER_OVER_BUDGET", "downgrade")
        if over_budget not in ("downgrade", "reject"):
            raise SettingsError(
                f"SCRIBE_ROUTER_OVER_BUDGET: {over_budget!r} must be downgrade or reject"
            )
        offpeak_text = env.get("SCRIBE_ROUTER_OFFPEAK", "").strip()
        return cls(
            providers=providers,
            free_images_per_day=reader.whole("SCRIBE_ROUTER_FREE_IMAGES_PER_DAY", 1000),
            over_budget=over_budget,
            default_budget_usd=reader.money("SCRIBE_ROUTER_DEFAULT_BUDGET_USD"),
            max_output_tokens=reader.whole("SCRIBE_ROUTER_MAX_OUTPUT_TOKENS", 1024),
            idempotency_window_s=reader.whole("SCRIBE_ROUTER_IDEMPOTENCY_S", 3600),
            call_timeout_s=reader.number("SCRIBE_ROUTER_CALL_TIMEOUT_S", 30.0),
            default_deadline_s=reader.number("SCRIBE_ROUTER_DEFAULT_DEADLINE_S", 120.0),
            attempts_per_model=reader.whole("SCRIBE_ROUTER_ATTEMPTS_PER_MODEL", 3),
            backoff_base_s=reader.number("SCRIBE_ROUTER_BACKOFF_BASE_S", 0.2),
            backoff_cap_s=reader.number("SCRIBE_ROUTER_BACKOFF_CAP_S", 5.0),
            breaker_failure_rate=reader.number("SCRIBE_ROUTER_BREAKER_FAILURE_RATE", 0.5),
            breaker_min_calls=reader.whole("SCRIBE_ROUTER_BREAKER_MIN_CALLS", 5),
            breaker_window_s=reader.number("SCRIBE_ROUTER_BREAKER_WINDOW_S", 30.0),
            breaker_cooldown_s=reader.number("SCRIBE_ROUTER_BREAKER_COOLDOWN_S", 30.0),
            urgent_concurrency=reader.whole("SCRIBE_ROUTER_URGENT_CONCURRENCY", 64),
            normal_concurrency=reader.whole("SCRIBE_ROUTER_NORMAL_CONCURRENCY", 32),
            deferred_concurrency=reader.whole("SCRIBE_ROUTER_DEFERRED_CONCURRENCY", 8),
            deferred_rate_per_s=reader.number("SCRIBE_ROUTER_DEFERRED_RATE", 20.0),
            deferred_max_held=reader.whole("SCRIBE_ROUTER_DEFERRED_MAX_HELD", 50_000),
            offpeak=OffPeak.parse(offpeak_text) if offpeak_text else None,
            promote_before_s=reader.number("SCRIBE_ROUTER_PROMOTE_BEFORE_S", 60.0),
            image_ttl_s=reader.whole("SCRIBE_ROUTER_IMAGE_TTL_S", 86_400),
            image_url_base=env.get("SCRIBE_ROUTER_IMAGE_URL_BASE") or None,
            budget_state_topic=env.get("SCRIBE_BUDGET_STATE_TOPIC", "budget.state"),
            express=reader.switch("SCRIBE_ROUTER_EXPRESS", True),
        )


class _Reader:
    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def _raw(self, name: str) -> str | None:
        value = self.env.get(name, "").strip()
        return value or None

    def whole(self, name: str, default: int) -> int:
        raw = self._raw(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise SettingsError(f"{name}: {raw!r} is not a whole number") from None
        if value < 0:
            raise SettingsError(f"{name}: {raw!r} must not be negative")
        return value

    def switch(self, name: str, default: bool) -> bool:
        raw = self._raw(name)
        if raw is None:
            return default
        if raw not in ("on", "off"):
            raise SettingsError(f"{name}: {raw!r} must be on or off")
        return raw == "on"

    def number(self, name: str, default: float) -> float:
        raw = self._raw(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise SettingsError(f"{name}: {raw!r} is not a number") from None
        if not value >= 0:
            raise SettingsError(f"{name}: {raw!r} must be a non-negative number")
        return value

    def money(self, name: str) -> Decimal | None:
        raw = self._raw(name)
        if raw is None:
            return None
        try:
            value = Decimal(raw)
        except InvalidOperation:
            raise SettingsError(f"{name}: {raw!r} is not a decimal amount of USD") from None
        if not value.is_finite() or value < 0:
            raise SettingsError(f"{name}: {raw!r} must be a non-negative amount of USD")
        return value
