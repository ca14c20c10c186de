"""Function settings. Field names are the environment variable names the template sets.

The template is the one source of every value: no field has a default here (bounds such
as ``ge``/``le`` only validate), so a variable the template stops setting is a clear
"Field required" error rather than a second, silently different default. Template tests
check that each function's Environment (minus POWERTOOLS_*) has exactly the fields of its
model and that none of them has a default. Handlers call ``XSettings.from_env()`` inside
the handler, never at import time.
"""

from __future__ import annotations

import os
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Self:
        env = os.environ if environ is None else environ
        return cls.model_validate({k: env[k] for k in cls.model_fields if k in env})


def _split(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    return tuple(value)  # type: ignore[arg-type]


class IngestSettings(_Settings):
    DATA_BUCKET: str
    ITEMS_TABLE: str
    LABEL_QUEUE_URL: str
    MAX_IMAGE_SIDE: int
    MAX_UPLOAD_BYTES: int
    CLASS_NAMES: tuple[str, ...]
    # Share of unlabeled uploads sent to people at random (the audit stream that certifies).
    AUDIT_FRACTION: float = Field(ge=0.0, le=1.0)

    _classes = field_validator("CLASS_NAMES", mode="before")(_split)


class AutoLabelSettings(_Settings):
    DATA_BUCKET: str
    ITEMS_TABLE: str
    CHAMPION_PARAMETER: str
    ENDPOINT_NAME: str
    # Images per InvokeEndpoint: up to inference.py's MAX_BATCH (64); batches_by_size also
    # keeps each request under the 4 MB serverless payload limit.
    INFERENCE_BATCH_SIZE: int = Field(ge=1, le=64)
    # Share of what the champion would auto-label that goes to people blind instead (spot
    # checks of its accuracy; domain/audit.py).
    AUTO_LABEL_AUDIT_FRACTION: float = Field(ge=0.0, le=1.0)


class AuditAlarmSettings(_Settings):
    """What a function that takes human answers needs to stop a champion whose spot checks
    show it below its target (services/audit.py)."""

    ITEMS_TABLE: str
    CHAMPION_PARAMETER: str
    # Level of the audited-accuracy interval (the stack's certificate level); the alarm's
    # false-alarm probability per champion is at most 1 - this.
    CERTIFICATION_CONFIDENCE: float = Field(gt=0.0, lt=1.0)
    THRESHOLD_ALARM_NAME: str
    TOPIC_ARN: str
    STACK_NAME: str


class HumanLabelsSettings(AuditAlarmSettings):
    DATA_BUCKET: str
    ITEMS_TABLE: str
    # Its own queue: a labels file that outlasts one invocation continues in a new message.
    LABELS_FILE_QUEUE_URL: str
    # Rows applied between two checkpoints of a labels file (domain/label_runs.py): a few
    # BatchGetItem calls and at most this many writes, seconds on AWS.
    LABELS_CHUNK_ROWS: int = Field(ge=1, le=10_000)
    CLASS_NAMES: tuple[str, ...]

    _classes = field_validator("CLASS_NAMES", mode="before")(_split)


class ReviewExportSettings(_Settings):
    DATA_BUCKET: str
    ITEMS_TABLE: str
    CHAMPION_PARAMETER: str
    REVIEW_BATCH_SIZE: int
    CLASS_NAMES: tuple[str, ...]
    # Presigned image GETs in a batch (CSV, Label Studio tasks) live this long, or less: AWS
    # ends a presigned URL when the credentials that signed it (the function's role) expire.
    # SigV4 allows at most 7 days.
    IMAGE_URL_SECONDS: int = Field(ge=60, le=7 * 24 * 3600)

    _classes = field_validator("CLASS_NAMES", mode="before")(_split)


class ReviewApiSettings(AuditAlarmSettings):
    DATA_BUCKET: str
    ITEMS_TABLE: str
    ANSWERS_TABLE: str
    CHAMPION_PARAMETER: str
    CLASS_NAMES: tuple[str, ...]
    # How long a reviewer holds the items handed out (answer, skip or let it expire).
    LEASE_SECONDS: int = Field(ge=10, le=3600)
    # Presigned image GETs live this long (the page prefetches a few items ahead).
    IMAGE_URL_SECONDS: int = Field(ge=30, le=3600)
    MIN_NEW_HUMAN_LABELS: int

    _classes = field_validator("CLASS_NAMES", mode="before")(_split)


class StartTrainingSettings(_Settings):
    DATA_BUCKET: str
    ITEMS_TABLE: str
    CHAMPION_PARAMETER: str
    SAGEMAKER_ROLE_ARN: str
    JOB_PREFIX: str
    TRAINING_CODE_DIR: str
    # The TrainingImageUri override ("" = the CPU or GPU image for TRAINING_INSTANCE_TYPE).
    TRAINING_IMAGE_URI: str
    TRAINING_CPU_IMAGE_URI: str
    TRAINING_GPU_IMAGE_URI: str
    TRAINING_INSTANCE_TYPE: str
    TRAINING_INSTANCE_COUNT: int
    USE_SPOT: bool
    MAX_RUNTIME_SECONDS: int
    ENABLE_TUNING: bool
    TUNING_STRATEGY: Literal["Bayesian", "Random", "Hyperband", "Grid"]
    MAX_TUNING_JOBS: int
    MAX_PARALLEL_TUNING_JOBS: int
    TARGET_ACCURACY: float
    TRAINING_EPOCHS: int = Field(ge=1)
    TRAINING_ARCH: str
    CROSS_FIT_FOLDS: int = Field(ge=2)
    CERTIFICATION_CONFIDENCE: float = Field(gt=0.0, lt=1.0)
    MAX_UNLABELED_POOL: int = Field(ge=0)
    MIN_NEW_HUMAN_LABELS: int
    STACK_NAME: str


class PromoteSettings(_Settings):
    DATA_BUCKET: str
    # The gate's decision is recorded there (meta#gate, the dashboard's last gate).
    ITEMS_TABLE: str
    IDEMPOTENCY_TABLE: str
    TOPIC_ARN: str
    CHAMPION_PARAMETER: str
    JOB_PREFIX: str
    STACK_NAME: str
    SAGEMAKER_ROLE_ARN: str
    # The InferenceImageUri override ("" = CPU for serverless, else by ENDPOINT_INSTANCE_TYPE).
    INFERENCE_IMAGE_URI: str
    INFERENCE_CPU_IMAGE_URI: str
    INFERENCE_GPU_IMAGE_URI: str
    MODEL_PACKAGE_GROUP: str
    ENDPOINT_MODE: Literal["serverless", "instance"]
    ENDPOINT_INSTANCE_TYPE: str
    ENDPOINT_INSTANCE_COUNT: int
    SERVERLESS_MEMORY_MB: int
    SERVERLESS_MAX_CONCURRENCY: int
    MIN_TEST_ACCURACY: float
    PROMOTION_MARGIN: float
    # The rollout state machine a promoted model goes to, and how it paces the rollout.
    ROLLOUT_STATE_MACHINE_ARN: str
    ROLLOUT_POLL_SECONDS: int = Field(ge=1)
    ROLLOUT_BAKE_SECONDS: int = Field(ge=0)
    ROLLOUT_STEP_TIMEOUT_SECONDS: int = Field(ge=1)


class RolloutSettings(_Settings):
    """The rollout state machine's Lambda steps (deploy, check, bake, roll back, record)."""

    ITEMS_TABLE: str
    IDEMPOTENCY_TABLE: str
    LABEL_QUEUE_URL: str
    TOPIC_ARN: str
    CHAMPION_PARAMETER: str
    STACK_NAME: str
    ENDPOINT_NAME: str
    ENDPOINT_MODE: Literal["serverless", "instance"]
    ROLLBACK_ALARMS: tuple[str, ...]
    # A new champion clears the auto-label accuracy alarm its predecessor may have raised.
    THRESHOLD_ALARM_NAME: str

    _alarms = field_validator("ROLLBACK_ALARMS", mode="before")(_split)


class TeardownSettings(_Settings):
    JOB_PREFIX: str
    STACK_NAME: str
    ENDPOINT_NAME: str
    CHAMPION_PARAMETER: str


# logical id -> settings model; the template test and the local runtime use this map.
FUNCTION_SETTINGS: dict[str, type[_Settings]] = {
    "IngestFunction": IngestSettings,
    "AutoLabelFunction": AutoLabelSettings,
    "HumanLabelsFunction": HumanLabelsSettings,
    "ReviewExportFunction": ReviewExportSettings,
    "ReviewApiFunction": ReviewApiSettings,
    "StartTrainingFunction": StartTrainingSettings,
    "PromoteFunction": PromoteSettings,
    "RolloutFunction": RolloutSettings,
    "TeardownFunction": TeardownSettings,
}
