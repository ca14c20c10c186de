"""The contracts' JSON Schema files, checked with fastjsonschema.

fastjsonschema (pure Python, no compiled dependency) is what Powertools' own validation
utility uses; the functions' layer, the training job's sourcedir and the model's code/ each
carry it. Each schema file is compiled once per process. The files stay standard JSON
Schema (2020-12): tests/unit/test_contracts.py checks them with ``jsonschema`` too and
requires the same verdicts.

On top of the schema, a document must be JSON: Python's json writes NaN and Infinity, JSON
has neither, and no schema comparison fails on NaN (a NaN accuracy would pass any floor).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import fastjsonschema


class SchemaViolation(ValueError):
    """A document that does not follow its schema; ``reason`` says where and why."""

    def __init__(self, path: str, message: str):
        self.path, self.message = path, message
        self.reason = f"{path or 'top level'}: {message}"
        super().__init__(self.reason)


@cache
def load(path: str | Path) -> Callable[[Any], Any]:
    """The compiled validator of a schema file (compiled once per process)."""
    return fastjsonschema.compile(json.loads(Path(path).read_text()))


def _non_finite(value: Any, path: str) -> SchemaViolation | None:
    if isinstance(value, float) and not math.isfinite(value):
        return SchemaViolation(path, f"{value!r} is not a JSON number")
    if isinstance(value, dict):
        children = [(f"{path}.{k}" if path else str(k), v) for k, v in value.items()]
    elif isinstance(value, list):
        children = [(f"{path}[{i}]", v) for i, v in enumerate(value)]
    else:
        return None
    for where, child in children:
        if error := _non_finite(child, where):
            return error
    return None


def validate(document: Any, schema_path: str | Path) -> None:
    """Raise SchemaViolation (the first problem, with its path) unless ``document`` is JSON
    and valid under the schema file."""
    if error := _non_finite(document, ""):
        raise error
    try:
        load(schema_path)(document)
    except fastjsonschema.JsonSchemaValueException as exc:
        # exc.name is "data.test.accuracy" / "data.std[1]"; its message starts with it.
        name = exc.name or "data"
        path = name.removeprefix("data").lstrip(".")
        raise SchemaViolation(path, str(exc.message).removeprefix(name).strip()) from None
