"""Hypothesis strategies that generate instances of our JSON Schema files.

Covers the keywords `schemas.json_schema` emits (objects and maps, strings with patterns and
lengths, bounded numbers, enums, anyOf, oneOf, $ref, arrays). `hypothesis-jsonschema` 0.23
would be the
general tool, but it breaks on current Hypothesis (`'many' object has no attribute 'more'`).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import strategies as st

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)

_ZONES = st.sampled_from(
    [UTC, timezone(timedelta(hours=-7)), timezone(timedelta(hours=5, minutes=30))]
)
TIMESTAMPS = (
    st.datetimes(
        min_value=datetime(1, 1, 2),
        max_value=datetime(9999, 12, 30),
        timezones=_ZONES,
    ).map(lambda d: d.isoformat())
    | st.datetimes().map(lambda d: d.isoformat())  # no offset: the model refuses it
    | st.text(max_size=30)
)
DATES = st.dates().map(lambda d: d.isoformat()) | st.text(max_size=12)


def from_schema(schema: dict[str, Any], root: dict[str, Any] | None = None) -> Any:
    """A strategy for instances valid against `schema` (format is not asserted by JSON Schema,
    so `date-time` fields also get strings that are not timestamps)."""
    root = root or schema
    if "$ref" in schema:
        name = schema["$ref"].removeprefix("#/$defs/")
        return from_schema(root["$defs"][name], root)
    if "anyOf" in schema or "oneOf" in schema:
        options = schema.get("anyOf") or schema["oneOf"]
        return st.one_of([from_schema(option, root) for option in options])
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if kind == "string":
        return _string(schema)
    if kind == "integer":
        return st.integers(min_value=schema.get("minimum"), max_value=schema.get("maximum"))
    if kind == "number":
        return st.integers(
            min_value=schema.get("minimum"), max_value=schema.get("maximum")
        ) | st.floats(
            min_value=schema.get("minimum"),
            max_value=schema.get("maximum"),
            allow_nan=False,
            allow_infinity=False,
        )
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    if kind == "array":
        low = schema.get("minItems", 0)
        return st.lists(
            from_schema(schema.get("items", {}), root),
            min_size=low,
            max_size=max(low, min(schema.get("maxItems", 5), 5)),
        )
    if kind == "object":
        return _object(schema, root)
    return JSON_VALUES


def _string(schema: dict[str, Any]) -> Any:
    if schema.get("format") == "date-time":
        return TIMESTAMPS
    if schema.get("format") == "date":
        return DATES
    low, high = schema.get("minLength", 0), schema.get("maxLength", 200)
    if "pattern" in schema:
        return st.from_regex(schema["pattern"], fullmatch=True).filter(
            lambda s: low <= len(s) <= high
        )
    return st.text(min_size=low, max_size=min(high, 200))


def _object(schema: dict[str, Any], root: dict[str, Any]) -> Any:
    properties = schema.get("properties")
    if properties is None:
        return _map(schema, root)
    required = set(schema.get("required", ()))
    strategies = {name: from_schema(sub, root) for name, sub in properties.items()}
    return st.fixed_dictionaries(
        {name: s for name, s in strategies.items() if name in required},
        optional={name: s for name, s in strategies.items() if name not in required},
    )


def _map(schema: dict[str, Any], root: dict[str, Any]) -> Any:
    """A JSON object used as a map: keys from `propertyNames` or `patternProperties`, values
    from the matching value schema; any object when neither is given."""
    patterns = schema.get("patternProperties", {})
    if patterns:
        ((pattern, values),) = patterns.items()
        names = {**schema.get("propertyNames", {}), "type": "string", "pattern": pattern}
    elif "propertyNames" in schema:
        names, values = schema["propertyNames"], schema.get("additionalProperties", {})
    else:
        return st.dictionaries(st.text(max_size=10), JSON_VALUES, max_size=4)
    return st.dictionaries(from_schema(names, root), from_schema(values, root), max_size=4)
