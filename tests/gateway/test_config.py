"""Gateway settings: defaults, the tokens file, and limits that could never be met."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime.settings import SettingsError
from scribe.gateway.config import GatewaySettings

TOKEN = "t" * 24


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "SCRIBE_GATEWAY_TOKENS",
        "SCRIBE_GATEWAY_TOKENS_FILE",
        "SCRIBE_GATEWAY_PORT",
        "SCRIBE_GATEWAY_RATE",
        "SCRIBE_GATEWAY_BURST",
        "SCRIBE_GATEWAY_MAX_EVENTS",
        "SCRIBE_GATEWAY_API_TOKENS",
        "SCRIBE_GATEWAY_API_TOKENS_FILE",
        "SCRIBE_GATEWAY_API_RATE",
        "SCRIBE_GATEWAY_API_TIMEOUT_S",
        "SCRIBE_GATEWAY_JWT_KEY",
        "SCRIBE_GATEWAY_JWT_JWKS_URL",
        "SCRIBE_GATEWAY_JWT_ALGORITHMS",
        "SCRIBE_GATEWAY_JWT_TIER_CLAIM",
    ):
        monkeypatch.delenv(name, raising=False)


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCRIBE_GATEWAY_TOKENS", f"game:{TOKEN}:*")
    settings = GatewaySettings.from_env()
    assert (settings.port, settings.host, settings.rate) == (8080, "127.0.0.1", 1000)
    assert settings.burst == settings.max_events == 5000
    assert [c.name for c in settings.tokens.clients] == ["game"]


def test_tokens_come_from_both_the_variable_and_the_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "tokens"
    path.write_text(f"# one per line\nweb:{'w' * 20}:ai.requests\n")
    monkeypatch.setenv("SCRIBE_GATEWAY_TOKENS", f"game:{TOKEN}:*")
    monkeypatch.setenv("SCRIBE_GATEWAY_TOKENS_FILE", str(path))
    assert [c.name for c in GatewaySettings.from_env().tokens.clients] == ["game", "web"]
    monkeypatch.setenv("SCRIBE_GATEWAY_TOKENS_FILE", str(tmp_path / "missing"))
    with pytest.raises(SettingsError, match="SCRIBE_GATEWAY_TOKENS_FILE: cannot read"):
        GatewaySettings.from_env()


def test_a_burst_smaller_than_a_full_batch_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCRIBE_GATEWAY_MAX_EVENTS", "100")
    monkeypatch.setenv("SCRIBE_GATEWAY_BURST", "50")
    with pytest.raises(SettingsError, match="SCRIBE_GATEWAY_BURST"):
        GatewaySettings.from_env()
    monkeypatch.setenv("SCRIBE_GATEWAY_RATE", "0")
    monkeypatch.setenv("SCRIBE_GATEWAY_BURST", "500")
    with pytest.raises(SettingsError, match="SCRIBE_GATEWAY_RATE: '0' must be at least"):
        GatewaySettings.from_env()


def test_api_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "api-tokens"
    path.write_text(f"# user:token:tier\nbob:{'b' * 20}:free\n")
    monkeypatch.setenv("SCRIBE_GATEWAY_API_TOKENS", f"alice:{TOKEN}:premium")
    monkeypatch.setenv("SCRIBE_GATEWAY_API_TOKENS_FILE", str(path))
    monkeypatch.setenv("SCRIBE_GATEWAY_API_RATE", "2.5")
    monkeypatch.setenv("SCRIBE_GATEWAY_API_TIMEOUT_S", "99999")
    monkeypatch.setenv("SCRIBE_GATEWAY_JWT_JWKS_URL", "https://id.example/jwks.json")
    monkeypatch.setenv("SCRIBE_GATEWAY_JWT_TIER_CLAIM", "plan")
    api = GatewaySettings.from_env().api
    assert [(c.user_id, c.tier.value) for _, c in api.auth.static] == [
        ("alice", "premium"),
        ("bob", "free"),
    ]
    assert (api.rate, api.burst, api.timeout_s) == (2.5, 20, 3600)
    assert api.auth.jwt.enabled and api.auth.jwt.tier_claim == "plan"
    assert api.auth.jwt.algorithms == ("RS256", "ES256")
    monkeypatch.setenv("SCRIBE_GATEWAY_JWT_ALGORITHMS", "RS256,XX999")
    with pytest.raises(SettingsError, match="SCRIBE_GATEWAY_JWT_ALGORITHMS"):
        GatewaySettings.from_env()
