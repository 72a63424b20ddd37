"""The JSON Schema files under schemas/json are the producers' contract: never stale."""

from __future__ import annotations

import json

import jsonschema
import orjson
import pytest

from schemas import encode
from schemas.examples import example
from schemas.json_schema import FAMILIES, SCHEMA_DIR, file_name, render_all


def test_schema_files_match_the_models() -> None:
    expected = render_all()
    on_disk = {p.name: p.read_text() for p in SCHEMA_DIR.glob("*.schema.json")}
    assert on_disk == expected, "schemas/json is stale: run `make schemas` and commit the result"


@pytest.mark.parametrize("family", FAMILIES)
def test_examples_validate_against_their_json_schema(family: str) -> None:
    model = FAMILIES[family]
    schema = json.loads((SCHEMA_DIR / file_name(family, model)).read_text())
    jsonschema.validate(orjson.loads(encode(example(model))), schema)


def test_json_schema_rejects_what_the_model_rejects() -> None:
    schema = json.loads((SCHEMA_DIR / "usage_event.v1.schema.json").read_text())
    event = orjson.loads(encode(example(FAMILIES["usage_event"])))
    event["input_tokens"] = -5
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(event, schema)
