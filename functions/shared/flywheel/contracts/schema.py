"""The JSON Schema (2020-12) keywords the contracts' schema files use, in the standard library.

Why not ``jsonschema``: the functions' Lambda layer does not carry it (2.4 MB with rpds-py's
compiled extension, 70 to 450 ms more import on promote's cold start), and one validator
that both sides import means the training job can never write a metrics.json the functions
read differently. The schema files stay real JSON Schema: tests/unit/test_contracts.py runs
``jsonschema`` (a dev dependency) beside this module over valid and broken documents and
requires the same verdict (but for NaN and Infinity, which JSON does not have: refused
here, let through there), and a schema that uses a keyword this module does not implement
is refused when it is loaded, never half-checked.
"""

from __future__ import annotations

import json
import math
import re
from functools import cache
from pathlib import Path
from typing import Any

# Keywords that only annotate.
ANNOTATIONS = frozenset({"$schema", "$id", "$comment", "$defs", "title", "description"})
ASSERTIONS = frozenset(
    {
        "$ref",
        "type",
        "const",
        "enum",
        "required",
        "properties",
        "additionalProperties",
        "items",
        "minItems",
        "minLength",
        "pattern",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "allOf",
        "oneOf",
    }
)
_SUBSCHEMA = {"additionalProperties", "items"}
_SCHEMA_LISTS = {"allOf", "oneOf"}


class SchemaError(ValueError):
    """The schema file itself uses something this validator cannot check."""


class SchemaViolation(ValueError):
    """A document that does not follow its schema; ``reason`` says where and why."""

    def __init__(self, path: str, message: str):
        self.path, self.message = path, message
        self.reason = f"{path or 'top level'}: {message}"
        super().__init__(self.reason)


def _check_keywords(schema: Any, where: str) -> None:
    if isinstance(schema, bool):
        return
    if not isinstance(schema, dict):
        raise SchemaError(f"{where}: a schema must be an object or a boolean")
    unknown = set(schema) - ANNOTATIONS - ASSERTIONS
    if unknown:
        raise SchemaError(f"{where}: keywords {sorted(unknown)} are not implemented")
    if "$ref" in schema and not str(schema["$ref"]).startswith("#/$defs/"):
        raise SchemaError(f"{where}: only local '#/$defs/...' references are implemented")
    for name, sub in schema.get("$defs", {}).items():
        _check_keywords(sub, f"{where}/$defs/{name}")
    for name, sub in schema.get("properties", {}).items():
        _check_keywords(sub, f"{where}/properties/{name}")
    for key in _SUBSCHEMA & set(schema):
        _check_keywords(schema[key], f"{where}/{key}")
    for key in _SCHEMA_LISTS & set(schema):
        for i, sub in enumerate(schema[key]):
            _check_keywords(sub, f"{where}/{key}/{i}")


@cache
def load(path: str | Path) -> dict:
    """A schema file, checked once for keywords this module does not implement."""
    schema = json.loads(Path(path).read_text())
    _check_keywords(schema, Path(path).name)
    return schema


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "number": _is_number,
    # JSON has one number type: 2.0 is an integer (as jsonschema has it since draft 4).
    "integer": lambda v: _is_number(v) and (isinstance(v, int) or float(v).is_integer()),
}


def _equal(a: Any, b: Any) -> bool:
    """JSON equality: true is not 1, 1 is 1.0."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    if _is_number(a) and _is_number(b):
        return a == b
    return type(a) is type(b) and a == b


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _first_violation(value: Any, schema: Any, root: dict, path: str) -> SchemaViolation | None:
    if schema is True:
        return None
    if schema is False:
        return SchemaViolation(path, "not allowed here")
    if "$ref" in schema:
        target: Any = root
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        if error := _first_violation(value, target, root, path):
            return error
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_TYPES[t](value) for t in types):
            return SchemaViolation(path, f"{value!r:.60} is not of type {' or '.join(types)}")
    if "const" in schema and not _equal(value, schema["const"]):
        return SchemaViolation(path, f"{value!r:.60} is not {schema['const']!r}")
    if "enum" in schema and not any(_equal(value, option) for option in schema["enum"]):
        return SchemaViolation(path, f"{value!r:.60} is not one of {schema['enum']!r}")
    if isinstance(value, float) and not math.isfinite(value):
        # Python's json writes NaN and Infinity, JSON has neither (and jsonschema lets them
        # through: NaN fails no comparison, so a NaN accuracy would pass any gate).
        return SchemaViolation(path, f"{value!r} is not a JSON number")
    if _is_number(value):
        if "minimum" in schema and not value >= schema["minimum"]:
            return SchemaViolation(path, f"{value!r} is below the minimum {schema['minimum']}")
        if "maximum" in schema and not value <= schema["maximum"]:
            return SchemaViolation(path, f"{value!r} is above the maximum {schema['maximum']}")
        if "exclusiveMinimum" in schema and not value > schema["exclusiveMinimum"]:
            return SchemaViolation(path, f"{value!r} must be above {schema['exclusiveMinimum']}")
        if "exclusiveMaximum" in schema and not value < schema["exclusiveMaximum"]:
            return SchemaViolation(path, f"{value!r} must be below {schema['exclusiveMaximum']}")
    if isinstance(value, str):
        if "minLength" in schema and len(value) < schema["minLength"]:
            return SchemaViolation(path, f"{value!r:.60} is shorter than {schema['minLength']}")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            return SchemaViolation(path, f"{value!r:.60} does not match {schema['pattern']!r}")
    if isinstance(value, list):
        if "minItems" in schema and len(value) < schema["minItems"]:
            return SchemaViolation(path, f"needs at least {schema['minItems']} item(s)")
        if "items" in schema:
            for i, item in enumerate(value):
                if error := _first_violation(item, schema["items"], root, _join(path, i)):
                    return error
    if isinstance(value, dict):
        for key in schema.get("required", ()):
            if key not in value:
                return SchemaViolation(path, f"required property {key!r} is missing")
        properties = schema.get("properties", {})
        for key, item in value.items():
            sub = properties.get(key, schema.get("additionalProperties", True))
            if error := _first_violation(item, sub, root, _join(path, key)):
                return error
    for sub in schema.get("allOf", ()):
        if error := _first_violation(value, sub, root, path):
            return error
    if "oneOf" in schema:
        errors = [_first_violation(value, sub, root, path) for sub in schema["oneOf"]]
        matched = sum(error is None for error in errors)
        if matched != 1:
            why = "; ".join(e.reason for e in errors if e) if matched == 0 else "several"
            return SchemaViolation(path, f"matches {matched} of the allowed shapes ({why})")
    return None


def validate(document: Any, schema: dict) -> None:
    """Raise SchemaViolation (the first problem found, with its path) unless ``document`` is
    valid under ``schema``."""
    if error := _first_violation(document, schema, schema, ""):
        raise error
