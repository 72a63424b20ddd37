"""The versioned catalog of models and prices (`model_catalog.json`), shared by the router and
the usage aggregator so an estimate and a bill come from the same numbers."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from decimal import Decimal
from functools import cache, cached_property
from pathlib import Path

CATALOG_PATH = Path(__file__).parent / "model_catalog.json"
# Names a catalog file of the same format to use instead of the packaged one: how a price is
# added (or corrected) without a release. Read when a process first loads the catalog.
CATALOG_ENV = "SCRIBE_MODEL_CATALOG"
MILLION = Decimal(1_000_000)


class UnknownModelError(LookupError):
    """A (service, model) pair the catalog has no price for."""


class CatalogError(ValueError):
    """The catalog file cannot be read; the message names the file and what is wrong."""


@dataclass(frozen=True)
class ModelPrice:
    service: str
    model: str
    kind: str
    quality: int
    free: bool
    input_per_mtok: Decimal
    output_per_mtok: Decimal
    per_image: Decimal

    def cost(self, input_tokens: int, output_tokens: int, images: int) -> Decimal:
        return (
            self.input_per_mtok * input_tokens / MILLION
            + self.output_per_mtok * output_tokens / MILLION
            + self.per_image * images
        )


@dataclass(frozen=True)
class ModelCatalog:
    version: str
    models: tuple[ModelPrice, ...]

    @cached_property
    def _by_kind(self) -> dict[str, tuple[ModelPrice, ...]]:
        kinds: dict[str, list[ModelPrice]] = {}
        for entry in self.models:
            kinds.setdefault(entry.kind, []).append(entry)
        return {kind: tuple(entries) for kind, entries in kinds.items()}

    def of_kind(self, kind: str) -> tuple[ModelPrice, ...]:
        """The models of `kind` (`text`, `image`), in catalog order."""
        return self._by_kind.get(kind, ())

    def get(self, service: str, model: str) -> ModelPrice:
        for entry in self.models:
            if entry.service == service and entry.model == model:
                return entry
        raise UnknownModelError(
            f"no price for model {model!r} of service {service!r} in catalog {self.version}"
        )

    def price(
        self, service: str, model: str, input_tokens: int, output_tokens: int, images: int
    ) -> Decimal:
        return self.get(service, model).cost(input_tokens, output_tokens, images)


def parse_catalog(text: str) -> ModelCatalog:
    raw = json.loads(text, parse_float=Decimal)
    models = tuple(
        ModelPrice(
            service=m["service"],
            model=m["model"],
            kind=m["kind"],
            quality=int(m["quality"]),
            free=bool(m["free"]),
            input_per_mtok=Decimal(m["input_per_mtok"]),
            output_per_mtok=Decimal(m["output_per_mtok"]),
            per_image=Decimal(m["per_image"]),
        )
        for m in raw["models"]
    )
    return ModelCatalog(version=str(raw["version"]), models=models)


def catalog_path() -> Path:
    """The catalog this process prices with: SCRIBE_MODEL_CATALOG, else the packaged one."""
    configured = os.environ.get(CATALOG_ENV, "").strip()
    return Path(configured) if configured else CATALOG_PATH


def load_catalog(path: Path | None = None) -> ModelCatalog:
    """The catalog at `path`, by default `catalog_path()`; each file is read once."""
    return _read_catalog(path or catalog_path())


@cache
def _read_catalog(path: Path) -> ModelCatalog:
    try:
        return parse_catalog(path.read_text())
    except (OSError, ValueError, KeyError, TypeError, ArithmeticError) as error:
        origin = f" ({CATALOG_ENV})" if path != CATALOG_PATH else ""
        raise CatalogError(
            f"model catalog {path}{origin}: {type(error).__name__}: {error}"
        ) from None
