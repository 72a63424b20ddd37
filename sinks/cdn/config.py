"""CDN purge settings from `SCRIBE_CDN_*`.

`SCRIBE_CDN_URL` is the purge API's base URL and `SCRIBE_CDN_PROVIDERS` names the API shapes
to speak there (`fastly`, `cloudflare`, or both: the local simulator speaks both, and a
multi-CDN setup purges each). Per provider, `SCRIBE_CDN_<PROVIDER>_URL` overrides the base
URL, `_TOKEN` (or the shared `SCRIBE_CDN_TOKEN`) authenticates, and `_RATE` (requests/s),
`_BURST` and `_CONCURRENCY` tune it;
`SCRIBE_CDN_FASTLY_SERVICE_ID` and `SCRIBE_CDN_CLOUDFLARE_ZONE_ID` name what to purge.

A purge that fails with a 5xx, 408, 429 or no answer is retried until
`SCRIBE_CDN_RETRY_DEADLINE_S` (default 15 minutes) after its first failure, waiting at most
`SCRIBE_CDN_BACKOFF_CAP_S` between attempts, so a CDN outage shorter than the deadline costs no
dead letter. `SCRIBE_CDN_MAX_ATTEMPTS` is unset by default; set, it also caps the attempts.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from runtime.settings import SettingsError, env_number
from sinks.cdn.adapters import Adapter, CloudflareAdapter, FastlyAdapter, Provider

# Defaults: Fastly documents no separate purge limit, so a moderate one; Cloudflare's is its
# token bucket for a Business plan (10 requests/s, bucket of 50). Set yours per account.
DEFAULT_RATE = {Provider.FASTLY: 50.0, Provider.CLOUDFLARE: 10.0}
DEFAULT_BURST = {Provider.FASTLY: 100, Provider.CLOUDFLARE: 50}
DEFAULT_RETRY_DEADLINE_S = 900.0
DEFAULT_BACKOFF_CAP_S = 30.0

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProviderSettings:
    provider: Provider
    base_url: str
    token: str
    account: str  # Fastly service id / Cloudflare zone id
    rate: float
    burst: int
    concurrency: int

    def adapter(self) -> Adapter:
        if self.provider is Provider.FASTLY:
            return FastlyAdapter(self.token, self.account)
        return CloudflareAdapter(self.token, self.account)


@dataclass(frozen=True)
class CdnSettings:
    providers: tuple[ProviderSettings, ...]
    retry_deadline: float = DEFAULT_RETRY_DEADLINE_S
    max_attempts: int | None = None  # None: only the deadline ends the retries
    timeout: float = 10.0
    backoff_base: float = 0.2
    backoff_cap: float = DEFAULT_BACKOFF_CAP_S
    max_retry_after: float = 60.0

    @classmethod
    def from_env(cls, cdn_url: str | None, providers: str | None) -> CdnSettings | None:
        """From `Settings.cdn_url` and `.cdn_providers` plus the tuning variables; None when
        no CDN is configured (URL targets are then dead-lettered)."""
        names = [n.strip().lower() for n in (providers or "").split(",")]
        names = [n for n in names if n]
        if not names:
            if cdn_url:
                raise SettingsError(
                    "SCRIBE_CDN_PROVIDERS: not set, so the API at SCRIBE_CDN_URL is unknown; "
                    "use fastly, cloudflare, or fastly,cloudflare (the local simulator)"
                )
            return None
        chosen: list[ProviderSettings] = []
        for name in dict.fromkeys(names):
            try:
                provider = Provider(name)
            except ValueError:
                known = ", ".join(p.value for p in Provider)
                raise SettingsError(
                    f"SCRIBE_CDN_PROVIDERS: unknown provider {name!r}; known: {known}"
                ) from None
            chosen.append(_provider(provider, cdn_url))
        return cls(
            tuple(chosen),
            retry_deadline=env_number(
                "SCRIBE_CDN_RETRY_DEADLINE_S", DEFAULT_RETRY_DEADLINE_S, 1, 7 * 24 * 3600
            ),
            max_attempts=_max_attempts(),
            timeout=env_number("SCRIBE_CDN_TIMEOUT_S", 10.0, 0.1, 300),
            backoff_cap=env_number("SCRIBE_CDN_BACKOFF_CAP_S", DEFAULT_BACKOFF_CAP_S, 0.2, 3600),
        )


def _max_attempts() -> int | None:
    """Optional since the retry deadline replaced it: a value left over from the old
    configuration (it defaulted to 5) would bring back dead letters after a few seconds of
    outage, so it is said out loud at start."""
    raw = os.environ.get("SCRIBE_CDN_MAX_ATTEMPTS", "").strip()
    if not raw:
        return None
    value = env_number("SCRIBE_CDN_MAX_ATTEMPTS", 0, 1, 1_000_000)
    if value != int(value):
        raise SettingsError(f"SCRIBE_CDN_MAX_ATTEMPTS: {raw} is not a whole number")
    log.warning(
        "SCRIBE_CDN_MAX_ATTEMPTS=%d caps CDN purge retries: a purge is dead-lettered after "
        "%d attempts even before SCRIBE_CDN_RETRY_DEADLINE_S; unset it to ride out outages",
        value,
        value,
    )
    return int(value)


def _provider(provider: Provider, cdn_url: str | None) -> ProviderSettings:
    env = os.environ
    prefix = f"SCRIBE_CDN_{provider.value.upper()}"
    base_url = env.get(f"{prefix}_URL") or cdn_url
    if not base_url:
        raise SettingsError(f"{prefix}_URL: no purge API URL for {provider} (or SCRIBE_CDN_URL)")
    if not base_url.startswith(("http://", "https://")):
        raise SettingsError(f"{prefix}_URL: {base_url!r} must start with http:// or https://")
    account_var = (
        "SCRIBE_CDN_FASTLY_SERVICE_ID"
        if provider is Provider.FASTLY
        else "SCRIBE_CDN_CLOUDFLARE_ZONE_ID"
    )
    token = env.get(f"{prefix}_TOKEN") or env.get("SCRIBE_CDN_TOKEN", "")
    if not token.strip():
        raise SettingsError(f"{prefix}_TOKEN: no API token for {provider} (or SCRIBE_CDN_TOKEN)")
    return ProviderSettings(
        provider=provider,
        base_url=base_url.rstrip("/"),
        token=token.strip(),
        account=env.get(account_var, "local"),
        rate=env_number(f"{prefix}_RATE", DEFAULT_RATE[provider], 0.001, 1_000_000),
        burst=int(env_number(f"{prefix}_BURST", DEFAULT_BURST[provider], 1, 1_000_000)),
        concurrency=int(env_number(f"{prefix}_CONCURRENCY", 4, 1, 256)),
    )
