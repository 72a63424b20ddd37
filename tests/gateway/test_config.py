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
