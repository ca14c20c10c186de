"""model_config.json, how a model artifact is served: one schema, one place for its names.

train.py builds the config, ``classifier.artifact.save_artifact`` validates and writes it
(the out-of-distribution detector, config["ood"], apart in ood.json: it is large), and
``classifier.artifact.read_artifact`` validates what it reads back whole, so inference.py
never meets a config it cannot serve (a clear error at model_fn, not a KeyError per request).
The shape is model_config_schema.json next to this file (flywheel.contracts.schema).
A threshold above 1 (classifier.calibration.NO_AUTO_LABEL) means nothing was certified:
auto-label nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flywheel.contracts import schema

FILE = "model_config.json"
OOD_FILE = "ood.json"  # config["ood"], written apart
OOD = "ood"
SCHEMA_PATH = Path(__file__).with_name("model_config_schema.json")


class InvalidModelConfig(ValueError):
    """A model config that inference.py cannot serve; ``reason`` says where."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def validate(config: Any) -> dict:
    """``config`` itself, or InvalidModelConfig (the first problem, with its path)."""
    try:
        schema.validate(config, SCHEMA_PATH)
    except schema.SchemaViolation as exc:
        raise InvalidModelConfig(f"{FILE} does not follow the contract: {exc.reason}") from None
    return config


def split(config: dict) -> tuple[dict, dict | None]:
    """(what model_config.json holds, the detector for ood.json or None)."""
    return {k: v for k, v in config.items() if k != OOD}, config.get(OOD) or None


def join(config: dict, detector: dict | None) -> dict:
    """The whole config again: model_config.json with ood.json under "ood"."""
    return {**config, OOD: detector} if detector else config
