"""JSON Schema files for producers in other languages, generated from the models.

Regenerate with `python -m schemas.json_schema`; a test fails when the files are stale.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from schemas.events import (
    WORLD_EVENT_CONTRACT,
    AIRequest,
    AIResponse,
    BudgetAlert,
    BudgetState,
    CacheInvalidation,
    Event,
    RoutedRequest,
    RouterSettlement,
    UsageEvent,
    WorldEvent,
    WorldTick,
)

SCHEMA_DIR = Path(__file__).parent / "json"

FAMILIES: dict[str, type[Event]] = {
    "ai_request": AIRequest,
    "ai_response": AIResponse,
    "usage_event": UsageEvent,
    "world_event": WorldEvent,
    "world_tick": WorldTick,
    "cache_invalidation": CacheInvalidation,
    "budget_alert": BudgetAlert,
    "budget_state": BudgetState,
    "routed_request": RoutedRequest,
    "router_settlement": RouterSettlement,
}


def file_name(family: str, model: type[Event]) -> str:
    version = model.model_fields["schema_version"].default
    return f"{family}.v{version}.schema.json"


def json_schema(model: type[Event]) -> dict[str, Any]:
    """The schema producers validate against; a world event's is one object per event type
    (`oneOf`, discriminated by `type`), its payload the model of that type."""
    if model is WorldEvent:
        return WORLD_EVENT_CONTRACT.json_schema(mode="validation")
    return model.model_json_schema(mode="validation")


def render_all() -> dict[str, str]:
    files = {}
    for family, model in FAMILIES.items():
        schema = json_schema(model)
        schema = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"https://scribe.invalid/schemas/{file_name(family, model)}",
            "title": model.__name__,
            **schema,
        }
        files[file_name(family, model)] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return files


def main() -> int:
    SCHEMA_DIR.mkdir(exist_ok=True)
    for name, text in render_all().items():
        (SCHEMA_DIR / name).write_text(text)
        print(f"wrote {SCHEMA_DIR / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
