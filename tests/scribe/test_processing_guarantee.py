"""SCRIBE_PROCESSING_GUARANTEE: every flow is exact by its keys, so `exactly_once` is accepted
(a deployment that sets it still starts) with a warning, and Faust runs no transactions; a
value that is neither is refused early."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from runtime.settings import Settings, SettingsError
from scribe.app import NO_TRANSACTIONS_NEEDED, create_app, faust_settings


def test_at_least_once_by_default(clean_env: pytest.MonkeyPatch) -> None:
    assert Settings.from_env().require().base.processing_guarantee == "at_least_once"


def test_exactly_once_is_accepted_warned_about_and_not_handed_to_faust(
    clean_env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    clean_env.setenv("SCRIBE_PROCESSING_GUARANTEE", "exactly_once")
    clean_env.setenv("SCRIBE_STATE_DIR", str(tmp_path))
    settings = Settings.from_env().require()
    assert "processing_guarantee" not in faust_settings(settings)
    with caplog.at_level(logging.WARNING, logger="scribe.app"):
        create_app(settings)
    assert NO_TRANSACTIONS_NEEDED in caplog.text


def test_an_unknown_guarantee_names_the_variable(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("SCRIBE_PROCESSING_GUARANTEE", "exactly-once")
    with pytest.raises(SettingsError, match="SCRIBE_PROCESSING_GUARANTEE: 'exactly-once'"):
        Settings.from_env()
