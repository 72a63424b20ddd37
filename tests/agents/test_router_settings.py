"""Router settings: simulator or real providers, key limits, and clear errors."""

from __future__ import annotations

from decimal import Decimal

import pytest

from agents.router.settings import REAL_LIMITS, SIMULATED_LIMITS, RouterSettings
from runtime.settings import SettingsError

SIM = "http://127.0.0.1:8900"


def test_without_keys_every_call_goes_to_the_simulator_with_high_limits() -> None:
    settings = RouterSettings.from_env({"SCRIBE_PROVIDER_URL": SIM})
    assert set(settings.providers) == {"openrouter", "gemini"}
    for provider in settings.providers.values():
        assert provider.base_url == SIM and provider.simulated
        assert len(provider.keys) == 3 and all(k.startswith("sim-") for k in provider.keys)
        limits = (provider.requests_per_minute, provider.requests_per_day)
        assert limits == SIMULATED_LIMITS


def test_real_keys_switch_to_the_real_services_with_their_limits() -> None:
    env = {"SCRIBE_PROVIDER_URL": SIM, "OPENROUTER_API_KEYS": "k1, k2,", "GEMINI_API_KEYS": "g1"}
    settings = RouterSettings.from_env(env)
    openrouter, gemini = settings.providers["openrouter"], settings.providers["gemini"]
    assert openrouter.base_url == "https://openrouter.ai" and openrouter.keys == ("k1", "k2")
    assert (openrouter.requests_per_minute, openrouter.requests_per_day) == REAL_LIMITS[
        "openrouter"
    ]
    assert gemini.base_url == "https://generativelanguage.googleapis.com" and not gemini.simulated
    assert "k1" not in repr(openrouter), "keys stay out of reprs (and so out of logs)"


def test_base_url_settings_point_real_keys_at_the_simulator() -> None:
    env = {
        "SCRIBE_PROVIDER_URL": SIM,
        "OPENROUTER_API_KEYS": "a,b",
        "SCRIBE_OPENROUTER_URL": SIM + "/",
        "SCRIBE_OPENROUTER_KEY_RPM": "5",
    }
    openrouter = RouterSettings.from_env(env).providers["openrouter"]
    assert openrouter.base_url == SIM and openrouter.simulated and openrouter.keys == ("a", "b")
    assert openrouter.requests_per_minute == 5


def test_no_keys_and_no_simulator_configures_no_provider() -> None:
    assert RouterSettings.from_env({}).providers == {}


def test_router_options_are_read_and_checked() -> None:
    env = {
        "SCRIBE_ROUTER_FREE_IMAGES_PER_DAY": "10",
        "SCRIBE_ROUTER_OVER_BUDGET": "reject",
        "SCRIBE_ROUTER_DEFAULT_BUDGET_USD": "12.50",
        "SCRIBE_ROUTER_OFFPEAK": "22:00-06:00",
        "SCRIBE_ROUTER_EXPRESS": "off",
    }
    settings = RouterSettings.from_env(env)
    assert RouterSettings.from_env({}).express and not settings.express
    assert settings.free_images_per_day == 10 and settings.over_budget == "reject"
    assert settings.default_budget_usd == Decimal("12.50")
    assert settings.offpeak is not None


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SCRIBE_ROUTER_FREE_IMAGES_PER_DAY", "many"),
        ("SCRIBE_ROUTER_FREE_IMAGES_PER_DAY", "-1"),
        ("SCRIBE_ROUTER_OVER_BUDGET", "shrug"),
        ("SCRIBE_ROUTER_DEFAULT_BUDGET_USD", "lots"),
        ("SCRIBE_ROUTER_DEFERRED_RATE", "fast"),
        ("SCRIBE_ROUTER_EXPRESS", "yes"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        RouterSettings.from_env({name: value})
