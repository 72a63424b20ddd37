"""Each world event type's payload is part of the published contract: the JSON Schema has a
branch per type, every example satisfies it, and the README lists every type with an example."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest

from schemas import encode
from schemas.events import WorldEvent
from schemas.examples import WORLD_PAYLOAD_EXAMPLES, example, world_event_examples
from schemas.json_schema import SCHEMA_DIR
from schemas.world import PAYLOADS

README = Path(__file__).resolve().parents[2] / "README.md"


def _schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((SCHEMA_DIR / "world_event.v1.schema.json").read_text())
    return loaded


def _wire(event: WorldEvent) -> dict[str, Any]:
    wire: dict[str, Any] = orjson.loads(encode(event))
    return wire


def test_the_schema_has_one_branch_per_event_type_told_apart_by_type() -> None:
    schema = _schema()
    assert schema["discriminator"]["propertyName"] == "type"
    assert set(schema["discriminator"]["mapping"]) == set(PAYLOADS)
    assert len(schema["oneOf"]) == len(PAYLOADS)


@pytest.mark.parametrize("event", world_event_examples(), ids=lambda e: e.type)
def test_every_example_satisfies_the_json_schema(event: WorldEvent) -> None:
    jsonschema.validate(_wire(event), _schema())


def test_there_is_an_example_of_every_type() -> None:
    assert set(WORLD_PAYLOAD_EXAMPLES) == set(PAYLOADS)


def test_the_json_schema_refuses_a_location_without_its_kind_and_an_unknown_type() -> None:
    no_kind = _wire(example(WorldEvent, type="location_created"))
    del no_kind["payload"]["kind"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(no_kind, _schema())
    unknown = _wire(example(WorldEvent, type="world_unloaded")) | {"type": "dragon_summoned"}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(unknown, _schema())


def readme_rows() -> list[str]:
    """The README's table of world event types, generated from the payload models."""
    rows = []
    for type_, model in PAYLOADS.items():
        required = [name for name, field in model.model_fields.items() if field.is_required()]
        needs = ", ".join(f"`{name}`" for name in required) or "(nothing)"
        payload = orjson.dumps(WORLD_PAYLOAD_EXAMPLES[type_]).decode()
        rows.append(f"| `{type_}` | {needs} | `{payload}` |")
    return rows


def test_the_readme_lists_every_world_event_type_with_an_example() -> None:
    text = README.read_text()
    missing = [row for row in readme_rows() if row not in text]
    assert not missing, "README.md's world event table is stale; its rows are:\n" + "\n".join(
        readme_rows()
    )
