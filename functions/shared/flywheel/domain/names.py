"""SageMaker resource names: deterministic, valid, short enough."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable

NAME_RE = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9])*$")
TRAINING_MAX = 63
TUNING_MAX = 32
MODEL_MAX = 63


def _check(name: str, limit: int) -> str:
    if len(name) > limit or not NAME_RE.match(name):
        raise ValueError(f"invalid SageMaker name {name!r} (max {limit})")
    return name


def _attempt_suffix(attempt: int) -> str:
    if attempt < 1:
        raise ValueError(f"attempt must be >= 1, got {attempt}")
    return "" if attempt == 1 else f"-r{attempt}"


def training_job_name(prefix: str, snapshot_id: str, attempt: int = 1) -> str:
    """``<JobPrefix>-<snapshot hash>[-r<n>]``: the same snapshot never starts a second job,
    except a retry (attempt n >= 2) after the previous attempt Failed or was Stopped."""
    return _check(f"{prefix}-{snapshot_id[:16]}{_attempt_suffix(attempt)}", TRAINING_MAX)


def tuning_job_name(prefix: str, snapshot_id: str, attempt: int = 1) -> str:
    # "h" (not a hex digit) keeps tuning names apart from training names. A retry suffix
    # takes its room from the snapshot hash, so the name stays within 32 characters.
    suffix = _attempt_suffix(attempt)
    return _check(f"{prefix}-h{snapshot_id[: 15 - len(suffix)]}{suffix}", TUNING_MAX)


def model_name(model_version: str) -> str:
    """Model named after the training job that produced it (the model version)."""
    return _check(model_version[:MODEL_MAX].rstrip("-"), MODEL_MAX)


def endpoint_config_name(model: str, variant_spec: dict) -> str:
    """One config per model and variant settings (a serverless->instance switch is a new one)."""
    digest = hashlib.sha256(repr(sorted(variant_spec.items())).encode()).hexdigest()[:6]
    return _check(f"{model[: MODEL_MAX - 7]}-{digest}", MODEL_MAX)


# A job that ended like this never produced a model from these labels: retry under a new name.
RETRYABLE_STATUSES = ("Failed", "Stopped")
MAX_ATTEMPTS = 20


def job_attempt(
    name_of: Callable[[int], str],
    status_of: Callable[[str], str | None],
    max_attempts: int = MAX_ATTEMPTS,
) -> tuple[str, str | None]:
    """(name, its status or None) of the job that stands for a snapshot now.

    Walks attempts 1, 2, ... past the ones that Failed or were Stopped; the first name
    that does not exist yet (status None) is the one to create, any other status is the
    job that already stands for these labels (running or Completed).
    """
    name, status = name_of(1), None
    for attempt in range(1, max_attempts + 1):
        name = name_of(attempt)
        status = status_of(name)
        if status not in RETRYABLE_STATUSES:
            return name, status
    return name, status


def client_token(*parts: str) -> str:
    """A ClientToken (at most 36 of ``[a-zA-Z0-9-]``) that is the same for the same parts: a
    create call made again with it (a step re-run after a restart) creates nothing new."""
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]
