"""SCRIBE_MODEL_CATALOG: a catalog file that replaces the packaged one (how a price is added
without a release), and a plain error when it cannot be read."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from schemas.model_catalog import (
    CATALOG_ENV,
    CATALOG_PATH,
    CatalogError,
    UnknownModelError,
    catalog_path,
    load_catalog,
)


def test_the_packaged_catalog_unless_the_setting_names_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(CATALOG_ENV, raising=False)
    assert catalog_path() == CATALOG_PATH
    with pytest.raises(UnknownModelError):
        load_catalog().get("acme", "acme/new-model")

    raw = json.loads(CATALOG_PATH.read_text())
    raw["version"] = "2026-12-04"
    raw["models"].append(
        {
            "service": "acme",
            "model": "acme/new-model",
            "kind": "text",
            "quality": 1,
            "free": False,
            "input_per_mtok": "0.70",
            "output_per_mtok": "2.10",
            "per_image": "0",
        }
    )
    own = tmp_path / "catalog.json"
    own.write_text(json.dumps(raw))
    monkeypatch.setenv(CATALOG_ENV, str(own))
    catalog = load_catalog()
    assert catalog.version == "2026-12-04"
    assert catalog.price("acme", "acme/new-model", 1_000_000, 1_000_000, 0) == Decimal("2.80")


@pytest.mark.parametrize("content", [None, "{not json", '{"version": "x"}'])
def test_a_catalog_that_cannot_be_read_names_the_file_and_the_setting(
    content: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "catalog.json"
    if content is not None:
        path.write_text(content)
    monkeypatch.setenv(CATALOG_ENV, str(path))
    with pytest.raises(CatalogError, match=f"{path}.*{CATALOG_ENV}"):
        load_catalog()
