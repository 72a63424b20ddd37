"""The outbound-call benchmark runs end to end against its own provider simulator."""

from __future__ import annotations

import re

import pytest

from bench.outbound_calls import main

pytestmark = pytest.mark.integration


def test_each_client_gets_a_cpu_figure_per_round(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--calls", "5"]) == 0
    rounds = [line for line in capsys.readouterr().out.splitlines() if "round" in line]
    assert len(rounds) == 4
    for line in rounds:
        figures = re.findall(r"(httpx|httpx over aiohttp|JsonPoster) (\d+\.\d{3}) ms", line)
        assert [name for name, _ in figures] == ["httpx", "httpx over aiohttp", "JsonPoster"]
        assert all(float(ms) > 0 for _, ms in figures)
