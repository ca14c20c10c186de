"""SageMaker resource names: deterministic, valid, short enough."""

from __future__ import annotations

import hashlib
import re

NAME_RE = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9])*$")
TRAINING_MAX = 63
TUNING_MAX = 32
MODEL_MAX = 63


def _check(name: str, limit: int) -> str:
    if len(name) > limit or not NAME_RE.match(name):
        raise ValueError(f"invalid SageMaker name {name!r} (max {limit})")
    return name


def training_job_name(prefix: str, snapshot_id: str) -> str:
    """``<JobPrefix>-<snapshot hash>``: the same snapshot never starts a second job."""
    return _check(f"{prefix}-{snapshot_id[:16]}", TRAINING_MAX)


def tuning_job_name(prefix: str, snapshot_id: str) -> str:
    # "h" (not a hex digit) keeps tuning names apart from training names.
    return _check(f"{prefix}-h{snapshot_id[:15]}", TUNING_MAX)


def model_name(model_version: str) -> str:
    """Model named after the training job that produced it (the model version)."""
    return _check(model_version[:MODEL_MAX].rstrip("-"), MODEL_MAX)


def endpoint_config_name(model: str, variant_spec: dict) -> str:
    """One config per model and variant settings (a serverless->instance switch is a new one)."""
    digest = hashlib.sha256(repr(sorted(variant_spec.items())).encode()).hexdigest()[:6]
    return _check(f"{model[: MODEL_MAX - 7]}-{digest}", MODEL_MAX)
