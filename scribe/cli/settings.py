"""The settings every `scribe` command runs with: SCRIBE_* from the environment, the unset ones
filled in from a running embedded stack when the developer tools are installed."""

from __future__ import annotations

import os

import click

from runtime.security import Redactor
from runtime.settings import ResolvedSettings, Settings, SettingsError


def fill_from_embedded_stack() -> list[str]:
    """Set the SCRIBE_* variables left unset from the embedded stack running under
    SCRIBE_STATE_DIR (`scribe stack up`), so that the worker and every flow (the router looks
    for SCRIBE_PROVIDER_URL) read one environment; returns the names it set.

    The embedded stack is developer tooling (the dev extra). A plain install has none to find,
    and then only what the environment names counts."""
    try:
        from devkit.stack import fill_environment
    except ModuleNotFoundError:
        return []
    return fill_environment(os.environ, Settings.from_env().state_dir)


def resolved_settings() -> ResolvedSettings:
    """The settings, with their secrets kept out of every log record from here on."""
    try:
        fill_from_embedded_stack()
        settings = Settings.from_env().require()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None
    Redactor(settings.secrets).install()
    return settings
