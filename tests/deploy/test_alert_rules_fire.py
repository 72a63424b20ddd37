"""The alert rules do what they say: Prometheus's own promtool evaluates them against synthetic
series from two workers (deploy/prometheus/alerts_test.yml) — which alerts fire, with which
labels and text, and which stay quiet. promtool comes from Debian's `prometheus` package,
unpacked under .scribe/tools/ (nothing is installed system-wide)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.dashboard  # the monitoring tests that fetch a Debian tool

RULE_TESTS = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "alerts_test.yml"


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    print(f"alert rule tests: {' '.join(args)}", file=sys.stderr, flush=True)
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=600, check=False)


@pytest.fixture(scope="session")
def promtool(pytestconfig: pytest.Config) -> str:
    found = shutil.which("promtool")
    if found:
        return found
    tools = pytestconfig.rootpath / ".scribe" / "tools" / "prometheus"
    binary = tools / "usr" / "bin" / "promtool"
    if not binary.exists():
        downloads = tools.parent / "downloads"
        downloads.mkdir(parents=True, exist_ok=True)
        fetched = _run("apt-get", "download", "prometheus", cwd=downloads)
        if fetched.returncode != 0:  # a fresh machine may have no package lists yet
            _run("apt-get", "update")
            fetched = _run("apt-get", "download", "prometheus", cwd=downloads)
        assert fetched.returncode == 0, f"apt-get download prometheus failed:\n{fetched.stderr}"
        (package,) = sorted(downloads.glob("prometheus_*.deb"))[-1:]
        unpacked = _run("dpkg-deb", "-x", str(package), str(tools))
        assert unpacked.returncode == 0, unpacked.stderr
    return str(binary)


@pytest.mark.timeout(600)
def test_alert_rules_fire_as_their_unit_tests_expect(promtool: str) -> None:
    result = _run(promtool, "test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
