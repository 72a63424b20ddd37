from __future__ import annotations

import pytest

from runtime.settings import SettingsError, UsageSettings


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "SCRIBE_BUDGET_ALERT_THRESHOLDS",
        "SCRIBE_USAGE_MAX_TOKENS",
        "SCRIBE_USAGE_RETENTION_MONTHS",
        "SCRIBE_PEAK_HOURS_UTC",
        "SCRIBE_FREE_TIER_DAILY_REQUESTS",
    ):
        monkeypatch.delenv(name, raising=False)
    assert UsageSettings.from_env() == UsageSettings()
    assert UsageSettings().alert_thresholds_pct == (50, 80, 100)


def test_thresholds_are_sorted_and_deduplicated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCRIBE_BUDGET_ALERT_THRESHOLDS", "90, 25,90,150")
    monkeypatch.setenv("SCRIBE_PEAK_HOURS_UTC", "8-12")
    settings = UsageSettings.from_env()
    assert settings.alert_thresholds_pct == (25, 90, 150)
    assert settings.peak_hours_utc == (8, 12)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("SCRIBE_BUDGET_ALERT_THRESHOLDS", "50,eighty", "comma-separated"),
        ("SCRIBE_BUDGET_ALERT_THRESHOLDS", "0,50", "between 1 and 1000"),
        ("SCRIBE_PEAK_HOURS_UTC", "22-16", "start < end"),
        ("SCRIBE_PEAK_HOURS_UTC", "evening", "hour range"),
        ("SCRIBE_USAGE_MAX_TOKENS", "lots", "whole number"),
    ],
)
def test_bad_values_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=name) as raised:
        UsageSettings.from_env()
    assert message in str(raised.value)
