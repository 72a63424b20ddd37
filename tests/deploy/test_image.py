"""The worker image's Dockerfile, checked without a Docker engine: it copies every package of
the product (none of the developer tooling) and installs the pins with the Makefile's uv."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from tests.test_layers import LAYERS, TOOLING

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def _copied() -> set[str]:
    return {
        source.rstrip("/")
        for line in DOCKERFILE.splitlines()
        if line.startswith("COPY ")
        for source in line.split()[1:-1]
    }


def test_copies_every_product_package_and_no_tooling() -> None:
    copied = _copied()
    assert set(LAYERS) <= copied, f"the image lacks {sorted(set(LAYERS) - copied)}"
    assert not copied & set(TOOLING), f"the image copies tooling {sorted(copied & set(TOOLING))}"
    # The build reads these: the project, its pins, and the readme pyproject names.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert {"pyproject.toml", "uv.lock", project["readme"]} <= copied


def test_packages_of_the_wheel_are_the_layers_and_the_tooling() -> None:
    """pyproject's package list names each top-level package, so none is left out of a wheel."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    included = {pattern.rstrip("*") for pattern in setuptools["packages"]["find"]["include"]}
    assert included == {*LAYERS, *TOOLING}


def test_installs_the_lock_with_the_makefiles_uv() -> None:
    pinned = re.search(r"^UV_VERSION := (\S+)$", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert pinned is not None
    assert f"'uv=={pinned.group(1)}'" in DOCKERFILE
    assert "uv export --quiet --frozen --no-dev" in DOCKERFILE
    assert "--require-hashes" in DOCKERFILE
