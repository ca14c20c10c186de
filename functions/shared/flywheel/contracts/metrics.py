"""metrics.json, the evaluation a training job leaves in model.tar.gz: one schema, one reader.

train.py builds it and ``classifier.artifact.save_artifact`` calls ``validate`` before it
writes anything (a bad artifact must never reach the gate); promote reads it with ``read``
(gate inputs), and its ``threshold`` block is the certificate the dashboard and
``flywheel status`` explain (flywheel.domain.certification). The shape is
metrics_schema.json next to this file, checked by flywheel.contracts.schema (fastjsonschema).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flywheel.contracts import schema

FILE = "metrics.json"
SCHEMA_PATH = Path(__file__).with_name("metrics_schema.json")
SCHEMA_VERSION = 1


class InvalidMetrics(ValueError):
    """A metrics.json that does not follow metrics_schema.json; ``reason`` says where."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def loads(data: bytes | str) -> Any:
    """The document in a metrics.json file; InvalidMetrics when it is not JSON at all."""
    try:
        return json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidMetrics(f"{FILE} is not JSON: {exc}") from None


def validate(doc: Any) -> None:
    """Raise InvalidMetrics (the first problem, with its path) unless ``doc`` follows the schema."""
    try:
        schema.validate(doc, SCHEMA_PATH)
    except schema.SchemaViolation as exc:
        raise InvalidMetrics(f"{FILE} does not follow the contract: {exc.reason}") from None


@dataclass(frozen=True)
class ModelMetrics:
    """What the promotion gate reads; ``raw`` keeps the whole (valid) document."""

    model_version: str
    classes: list[str]
    test_accuracy: float
    test_n: int
    test_set_id: str
    champion_test_accuracy: float | None
    champion_test_set_id: str | None
    champion_test_version: str | None
    threshold: float
    target_accuracy: float
    raw: dict


def read(doc: Any) -> ModelMetrics:
    """The gate's view of a metrics.json document; InvalidMetrics when it breaks the schema."""
    validate(doc)
    champion = doc["champion_test"]
    return ModelMetrics(
        model_version=doc["model_version"],
        classes=list(doc["classes"]),
        test_accuracy=float(doc["test"]["accuracy"]),
        test_n=int(doc["test"]["n"]),
        test_set_id=doc["test_set_id"],
        champion_test_accuracy=float(champion["accuracy"]) if champion else None,
        # The champion is evaluated on the challenger's own test images unless it says otherwise.
        champion_test_set_id=champion.get("test_set_id", doc["test_set_id"]) if champion else None,
        champion_test_version=champion["model_version"] if champion else None,
        threshold=float(doc["threshold"]["threshold"]),
        target_accuracy=float(doc["threshold"]["target_accuracy"]),
        raw=doc,
    )
