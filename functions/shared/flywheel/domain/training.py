"""CreateTrainingJob / CreateHyperParameterTuningJob request building (pure)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from flywheel.domain.splits import SPLITS, Snapshot
from flywheel.errors import ConfigurationError

CHECKPOINT_LOCAL_PATH = "/opt/ml/checkpoints"
WARM_START_STRATEGIES = ("Bayesian", "Random")  # Hyperband and Grid do not support warm start


@dataclass(frozen=True)
class JobSettings:
    """What a training or tuning request needs; no defaults: every value is the stack's."""

    region: str
    bucket: str
    stack_name: str
    role_arn: str
    image_uri: str
    instance_type: str
    instance_count: int
    use_spot: bool
    max_runtime_seconds: int
    target_accuracy: float
    epochs: int
    arch: str  # train.py --arch; a tuning job's search space may tune it instead
    cross_fit_folds: int
    confidence: float
    strategy: str
    max_jobs: int
    max_parallel_jobs: int


def search_space_id(search_space: dict) -> str:
    """Hash of what decides whether a previous tuning job can warm-start this one."""
    relevant = {k: search_space.get(k) for k in ("objective", "parameter_ranges")}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


def _s3_channel(name: str, uri: str, data_type: str = "S3Prefix") -> dict:
    return {
        "ChannelName": name,
        "DataSource": {
            "S3DataSource": {
                "S3DataType": data_type,
                "S3Uri": uri,
                "S3DataDistributionType": "FullyReplicated",
            }
        },
        "InputMode": "File",
    }


def _channels(
    snapshot: Snapshot,
    bucket: str,
    champion_model_data: str | None,
    unlabeled_manifest: str | None = None,
) -> list[dict]:
    """``train`` (always), ``test`` (random labels only, when any), ``unlabeled`` (a
    ManifestFile of the unlabeled pool, when not empty), ``champion`` (its model.tar.gz)."""
    channels = [
        _s3_channel(split, snapshot.channel_uri(bucket, split))
        for split in SPLITS
        if split == "train" or snapshot.counts.get(split)
    ]
    if unlabeled_manifest:
        channels.append(_s3_channel("unlabeled", unlabeled_manifest, "ManifestFile"))
    if champion_model_data:
        channels.append(_s3_channel("champion", champion_model_data))
    return channels


def _hyperparameters(
    s: JobSettings, search_space: dict, code_uri: str, model_version: str | None
) -> dict[str, str]:
    hps = {k: str(v) for k, v in (search_space.get("static_hyperparameters") or {}).items()}
    hps.update(
        {
            "target-accuracy": str(s.target_accuracy),
            "epochs": str(s.epochs),
            "arch": s.arch,
            "cross-fit-folds": str(s.cross_fit_folds),
            "confidence": str(s.confidence),
            "checkpoint-dir": CHECKPOINT_LOCAL_PATH,
            "sagemaker_program": "train.py",
            "sagemaker_submit_directory": code_uri,
            "sagemaker_region": s.region,
        }
    )
    if model_version:
        hps["model-version"] = model_version
    return hps


def _common(
    s: JobSettings,
    name: str,
    snapshot: Snapshot,
    champion_model_data: str | None,
    unlabeled_manifest: str | None,
) -> dict:
    stopping = {"MaxRuntimeInSeconds": s.max_runtime_seconds}
    if s.use_spot:
        stopping["MaxWaitTimeInSeconds"] = 2 * s.max_runtime_seconds
    return {
        "RoleArn": s.role_arn,
        "InputDataConfig": _channels(snapshot, s.bucket, champion_model_data, unlabeled_manifest),
        "OutputDataConfig": {"S3OutputPath": f"s3://{s.bucket}/models/"},
        "ResourceConfig": {
            "InstanceType": s.instance_type,
            "InstanceCount": s.instance_count,
            "VolumeSizeInGB": 30,
        },
        "StoppingCondition": stopping,
        "EnableManagedSpotTraining": s.use_spot,
        "CheckpointConfig": {
            "S3Uri": f"s3://{s.bucket}/checkpoints/{name}/",
            "LocalPath": CHECKPOINT_LOCAL_PATH,
        },
    }


def _tags(s: JobSettings, snapshot: Snapshot) -> list[dict]:
    return [
        {"Key": "flywheel:stack", "Value": s.stack_name},
        {"Key": "flywheel:snapshot", "Value": snapshot.snapshot_id},
    ]


def training_job_request(
    s: JobSettings,
    name: str,
    snapshot: Snapshot,
    search_space: dict,
    code_uri: str,
    champion_model_data: str | None,
    unlabeled_manifest: str | None = None,
) -> dict:
    return {
        "TrainingJobName": name,
        "AlgorithmSpecification": {
            "TrainingImage": s.image_uri,
            "TrainingInputMode": "File",
            "MetricDefinitions": search_space["metric_definitions"],
        },
        "HyperParameters": _hyperparameters(s, search_space, code_uri, name),
        **_common(s, name, snapshot, champion_model_data, unlabeled_manifest),
        "Tags": _tags(s, snapshot),
    }


def tuning_job_request(
    s: JobSettings,
    name: str,
    snapshot: Snapshot,
    search_space: dict,
    code_uri: str,
    champion_model_data: str | None,
    warm_start_parent: str | None,
    unlabeled_manifest: str | None = None,
) -> dict:
    ranges = search_space["parameter_ranges"]
    tuned = {r["Name"] for kind in ranges.values() for r in kind}
    static = {
        k: v for k, v in _hyperparameters(s, search_space, code_uri, None).items() if k not in tuned
    }
    limits: dict = {"MaxParallelTrainingJobs": s.max_parallel_jobs}
    config: dict = {
        "Strategy": s.strategy,
        "HyperParameterTuningJobObjective": search_space["objective"],
        "ParameterRanges": ranges,
        "ResourceLimits": limits,
    }
    if s.strategy == "Grid":
        if ranges.get("ContinuousParameterRanges") or ranges.get("IntegerParameterRanges"):
            raise ConfigurationError("Grid tuning needs categorical parameter ranges only")
    else:
        limits["MaxNumberOfTrainingJobs"] = s.max_jobs
    if s.strategy == "Hyperband":
        epochs = int(static["epochs"])  # always set: _hyperparameters passes s.epochs
        config["StrategyConfig"] = {
            "HyperbandStrategyConfig": {"MinResource": 1, "MaxResource": epochs}
        }
        config["TrainingJobEarlyStoppingType"] = "Off"
    else:
        config["TrainingJobEarlyStoppingType"] = "Auto" if s.strategy != "Grid" else "Off"
    request = {
        "HyperParameterTuningJobName": name,
        "HyperParameterTuningJobConfig": config,
        "TrainingJobDefinition": {
            "StaticHyperParameters": static,
            "AlgorithmSpecification": {
                "TrainingImage": s.image_uri,
                "TrainingInputMode": "File",
                "MetricDefinitions": search_space["metric_definitions"],
            },
            **_common(s, name, snapshot, champion_model_data, unlabeled_manifest),
        },
        "Tags": _tags(s, snapshot),
    }
    if warm_start_parent and s.strategy in WARM_START_STRATEGIES:
        request["WarmStartConfig"] = {
            "ParentHyperParameterTuningJobs": [{"HyperParameterTuningJobName": warm_start_parent}],
            # New labels since the parent: the data changed, the search space did not.
            "WarmStartType": "TransferLearning",
        }
    return request
