"""The worker starts no Faust consumer: every flow reads with a consumer of its own, so Faust's
group would hold only its leader topic, and its join would hold every start (`FlowsOnly`). A
Faust upgrade that changes its boot strategy shows here first."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime.settings import Settings
from scribe.app import create_app


def test_faust_starts_its_producer_and_web_server_but_no_consumer(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    clean_env.setenv("SCRIBE_STATE_DIR", str(tmp_path))
    app, _ = create_app(Settings.from_env().require())

    # By identity: Faust's table and agent managers are mappings, and two empty ones are equal.
    started = {id(service) for service in app.boot_strategy.server()}

    assert id(app.producer) in started
    assert id(app.web) in started
    for unwanted in (app.consumer, app._leader_assignor, app.topics, app.tables):
        assert id(unwanted) not in started, type(unwanted).__name__
