"""A real headless Chromium for the dashboard tests, installed from Debian's packages when the
machine lacks it (CI runs as root on a fresh machine; the network holds no browser downloads)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

BROWSER_PACKAGES = ("chromium", "chromium-driver", "fonts-dejavu-core")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1440,1400",
)


def _apt(*args: str) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    print(f"dashboard tests: apt-get {' '.join(args)}", file=sys.stderr, flush=True)
    subprocess.run(["apt-get", "-q", *args], check=True, env=env, timeout=900)


def ensure_chromium() -> tuple[str, str]:
    """Paths of chromium and chromedriver, installing the Debian packages if either is missing."""
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        if os.geteuid() != 0:
            pytest.fail(
                "the dashboard tests need Debian's chromium and chromium-driver: "
                f"apt-get install {' '.join(BROWSER_PACKAGES)} (as root)"
            )
        _apt("update")
        _apt("install", "-y", "--no-install-recommends", *BROWSER_PACKAGES)
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and chromedriver, "chromium or chromedriver still missing after apt-get"
    return chromium, chromedriver


@pytest.fixture(scope="session")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    chromium, chromedriver = ensure_chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # A driver path given here keeps Selenium Manager (which would download one) out of it.
    service = Service(executable_path=chromedriver, log_output=subprocess.DEVNULL)
    driver = webdriver.Chrome(service=service, options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="session")
def screenshot_dir(pytestconfig: pytest.Config) -> Path:
    """Kept after the run (`.scribe/` is git-ignored) so a person can look at it."""
    path = pytestconfig.rootpath / ".scribe" / "screenshots"
    path.mkdir(parents=True, exist_ok=True)
    return path
