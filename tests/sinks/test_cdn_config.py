from __future__ import annotations

import pytest

from runtime.settings import SettingsError
from sinks.cdn.adapters import Provider
from sinks.cdn.config import CdnSettings


def test_no_cdn_configured() -> None:
    assert CdnSettings.from_env(None, None) is None


@pytest.fixture(autouse=True)
def token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCRIBE_CDN_TOKEN", "shared")


def test_both_providers_at_one_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCRIBE_CDN_CLOUDFLARE_RATE", "25")
    monkeypatch.setenv("SCRIBE_CDN_FASTLY_TOKEN", "fk")
    settings = CdnSettings.from_env("http://127.0.0.1:9/", "fastly, cloudflare")
    assert settings is not None
    fastly, cloudflare = settings.providers
    assert (fastly.provider, cloudflare.provider) == (Provider.FASTLY, Provider.CLOUDFLARE)
    assert fastly.base_url == cloudflare.base_url == "http://127.0.0.1:9"
    assert (fastly.token, cloudflare.token) == ("fk", "shared")
    assert (cloudflare.rate, fastly.rate) == (25.0, 50.0)


def test_a_provider_url_overrides_the_shared_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCRIBE_CDN_CLOUDFLARE_URL", "https://api.cloudflare.com/client/v4")
    settings = CdnSettings.from_env(None, "cloudflare")
    assert settings is not None
    assert settings.providers[0].base_url == "https://api.cloudflare.com/client/v4"


@pytest.mark.parametrize(
    ("url", "providers", "message"),
    [
        ("http://127.0.0.1:9", None, "SCRIBE_CDN_PROVIDERS: not set"),
        ("http://127.0.0.1:9", "akamai", "unknown provider 'akamai'"),
        (None, "fastly", "SCRIBE_CDN_FASTLY_URL: no purge API URL"),
    ],
)
def test_errors_name_the_variable(url: str | None, providers: str | None, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        CdnSettings.from_env(url, providers)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("SCRIBE_CDN_MAX_ATTEMPTS", "0", r"SCRIBE_CDN_MAX_ATTEMPTS: 0 is outside \[1, "),
        ("SCRIBE_CDN_MAX_ATTEMPTS", "2.5", "SCRIBE_CDN_MAX_ATTEMPTS: 2.5 is not a whole number"),
        ("SCRIBE_CDN_RETRY_DEADLINE_S", "0", r"SCRIBE_CDN_RETRY_DEADLINE_S: 0 is outside \[1, "),
        ("SCRIBE_CDN_RETRY_DEADLINE_S", "15m", "SCRIBE_CDN_RETRY_DEADLINE_S: '15m' is not a num"),
        ("SCRIBE_CDN_BACKOFF_CAP_S", "0", r"SCRIBE_CDN_BACKOFF_CAP_S: 0 is outside \[0.2, "),
    ],
)
def test_numbers_are_checked(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=message):
        CdnSettings.from_env("http://127.0.0.1:9", "fastly")


def test_retries_default_to_a_15_minute_deadline_and_no_attempt_cap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SCRIBE_CDN_MAX_ATTEMPTS", raising=False)
    monkeypatch.delenv("SCRIBE_CDN_RETRY_DEADLINE_S", raising=False)
    monkeypatch.delenv("SCRIBE_CDN_BACKOFF_CAP_S", raising=False)
    settings = CdnSettings.from_env("http://127.0.0.1:9", "fastly")
    assert settings is not None
    assert (settings.retry_deadline, settings.max_attempts, settings.backoff_cap) == (
        900.0,
        None,
        30.0,
    )


def test_a_leftover_attempt_cap_still_caps_and_says_so(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("SCRIBE_CDN_MAX_ATTEMPTS", "5")
    monkeypatch.setenv("SCRIBE_CDN_RETRY_DEADLINE_S", "120")
    settings = CdnSettings.from_env("http://127.0.0.1:9", "fastly")
    assert settings is not None
    assert (settings.max_attempts, settings.retry_deadline) == (5, 120.0)
    assert "SCRIBE_CDN_MAX_ATTEMPTS=5 caps CDN purge retries" in caplog.text


def test_a_token_is_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SCRIBE_CDN_TOKEN")
    with pytest.raises(SettingsError, match="SCRIBE_CDN_CLOUDFLARE_TOKEN: no API token"):
        CdnSettings.from_env("http://127.0.0.1:9", "cloudflare")
