"""Gate a finished job's model; a winner gets its model and endpoint config and goes to the
rollout state machine (``statemachines/rollout.asl.json``), which deploys, bakes and records it.

Nothing here waits for the endpoint: the waits are the state machine's.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from flywheel.adapters import ledger, notifications, parameters, sagemaker, storage, workflows
from flywheel.contracts import metrics as metrics_contract
from flywheel.domain import gate, names
from flywheel.domain.champion import Champion
from flywheel.domain.containers import container_image
from flywheel.domain.deployment import EndpointSettings, endpoint_config_request, variant_spec
from flywheel.domain.items import now_iso
from flywheel.domain.rollout import Timing, execution_name
from flywheel.errors import InvalidArtifact, JobNotFinished
from flywheel.settings import PromoteSettings

TERMINAL = {"Completed", "Failed", "Stopped"}


@dataclass(frozen=True)
class PromoteResult:
    # deploying | rejected | failed | ignored | already_champion (the rollout records
    # promoted | rolled_back | failed for a model that passed the gate)
    outcome: str
    job_name: str
    model_version: str | None = None
    reason: str = ""
    execution_arn: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def _finished_training_job(kind: str, job_name: str) -> tuple[dict | None, str]:
    """(DescribeTrainingJob of the model to judge, or None with the failure reason)."""
    if kind == "tuning":
        tuning = sagemaker.describe_tuning_job(job_name)
        status = tuning["HyperParameterTuningJobStatus"]
        if status not in TERMINAL:
            raise JobNotFinished(f"{job_name} is {status}")
        best = (tuning.get("BestTrainingJob") or {}).get("TrainingJobName")
        if not best:
            return None, tuning.get("FailureReason") or f"tuning job {status} without a best job"
        job_name = best
    job = sagemaker.describe_training_job(job_name)
    status = job["TrainingJobStatus"]
    if status not in TERMINAL:
        raise JobNotFinished(f"{job_name} is {status}")
    if status != "Completed":
        return None, job.get("FailureReason") or f"training job {status}"
    return job, ""


def inference_image(s: PromoteSettings) -> str:
    """Serverless inference has no GPUs; instance endpoints get the image of their type."""
    instance_type = s.ENDPOINT_INSTANCE_TYPE if s.ENDPOINT_MODE == "instance" else None
    return container_image(
        instance_type, s.INFERENCE_CPU_IMAGE_URI, s.INFERENCE_GPU_IMAGE_URI, s.INFERENCE_IMAGE_URI
    )


def package_request(
    s: PromoteSettings,
    job: dict,
    metrics: gate.ModelMetrics,
    decision: gate.GateDecision,
    status: str,
    note: str,
) -> dict:
    """CreateModelPackage for this model: registered Rejected by the gate, or by the rollout's
    record step once the deployment's outcome (Approved or Rejected) is known."""
    model_data = job["ModelArtifacts"]["S3ModelArtifacts"]
    evaluation_key = f"models/{job['TrainingJobName']}/evaluation/metrics.json"
    return {
        "ModelPackageGroupName": s.MODEL_PACKAGE_GROUP,
        "ModelPackageDescription": f"{metrics.model_version}: {decision.reason}"[:1000],
        "ModelApprovalStatus": status,
        "InferenceSpecification": {
            "Containers": [{"Image": inference_image(s), "ModelDataUrl": model_data}],
            "SupportedContentTypes": [
                "image/jpeg",
                "image/png",
                "application/x-image",
                "application/json",
            ],
            "SupportedResponseMIMETypes": ["application/json"],
        },
        "ModelMetrics": {
            "ModelQuality": {
                "Statistics": {
                    "ContentType": "application/json",
                    "S3Uri": f"s3://{s.DATA_BUCKET}/{evaluation_key}",
                }
            }
        },
        "CustomerMetadataProperties": {
            "training_job": job["TrainingJobName"],
            "decision": status,
            "reason": (note or decision.reason)[:256],
            "test_accuracy": f"{decision.challenger_accuracy:.4f}",
            "champion_test_accuracy": (
                "none"
                if decision.champion_accuracy is None
                else f"{decision.champion_accuracy:.4f}"
            ),
            "test_set_id": metrics.test_set_id,
        },
    }


def _prepare_registry(s: PromoteSettings, job: dict, metrics: gate.ModelMetrics) -> None:
    """The package's evaluation document and its group (both idempotent)."""
    storage.put_json(
        s.DATA_BUCKET, f"models/{job['TrainingJobName']}/evaluation/metrics.json", metrics.raw
    )
    sagemaker.ensure_model_package_group(s.MODEL_PACKAGE_GROUP, f"{s.STACK_NAME} image classifier")


def _register(s: PromoteSettings, job: dict, metrics: gate.ModelMetrics, request: dict) -> str:
    _prepare_registry(s, job, metrics)
    return sagemaker.register_model_package(request)


def _endpoint_settings(s: PromoteSettings) -> EndpointSettings:
    return EndpointSettings(
        mode=s.ENDPOINT_MODE,
        instance_type=s.ENDPOINT_INSTANCE_TYPE,
        instance_count=s.ENDPOINT_INSTANCE_COUNT,
        memory_mb=s.SERVERLESS_MEMORY_MB,
        max_concurrency=s.SERVERLESS_MAX_CONCURRENCY,
    )


def gate_record(
    metrics: gate.ModelMetrics,
    champion: Champion | None,
    decision: gate.GateDecision,
    outcome: str,
    reason: str,
) -> dict:
    """The gate's decision with both scores on the same test set (the dashboard's last gate).

    A function of the job alone (no clock): it travels in the rollout's input, which a
    re-delivered event must rebuild identically; whoever writes it adds ``decided_at``.
    """
    return {
        "candidate": metrics.model_version,
        "champion": None if champion is None else champion.model_version,
        "candidate_score": round(decision.challenger_accuracy, 6),
        "champion_score": (
            None if decision.champion_accuracy is None else round(decision.champion_accuracy, 6)
        ),
        "test_set_size": metrics.test_n,
        "test_set_id": metrics.test_set_id,
        "decision": outcome,
        "reason": reason,
    }


def round_record(job: dict, metrics: gate.ModelMetrics) -> dict:
    """One round per promoted model: labels it was trained on, what it certified.

    The rollout's record step writes it (with ``promoted_at``) once the model is champion.
    """
    certificate = metrics.raw.get("threshold") or {}
    data = metrics.raw.get("data") or {}
    ended = job.get("TrainingEndTime")
    return {
        "model_version": metrics.model_version,
        "trained_at": ended if ended is None or isinstance(ended, str) else ended.isoformat(),
        "human_labels": sum(int(data.get(k) or 0) for k in ("train", "validation", "test")),
        "random_labels": data.get("random"),
        # The share of random labels at or above the threshold: what it should auto-label.
        "coverage": (
            float(certificate.get("coverage") or 0.0) if metrics.threshold <= 1.0 else 0.0
        ),
        "test_accuracy": metrics.test_accuracy,
        "threshold": metrics.threshold,
        "certificate": certificate,
    }


def _failed(
    s: PromoteSettings, job_name: str, reason: str, version: str | None = None
) -> PromoteResult:
    """Told to people and recorded as the promotion's result: a retry would change nothing."""
    notifications.notify(
        s.TOPIC_ARN,
        f"Training failed: {job_name}",
        {"outcome": "failed", "job": job_name, "reason": reason},
    )
    return PromoteResult("failed", job_name, version, reason=reason)


def promote_job(s: PromoteSettings, kind: str, job_name: str) -> PromoteResult:
    job, failure = _finished_training_job(kind, job_name)
    if job is None:
        return _failed(s, job_name, failure)
    if kind == "training" and job.get("TuningJobArn"):
        return PromoteResult("ignored", job_name, reason="child of a tuning job")
    version = job["TrainingJobName"]
    model_data = job["ModelArtifacts"]["S3ModelArtifacts"]
    try:
        metrics = gate.parse_metrics(storage.read_tar_member(model_data, metrics_contract.FILE))
    except InvalidArtifact as exc:  # e.g. a custom training script's metrics.json
        return _failed(s, job_name, f"the model artifact cannot be judged: {exc}", version)
    champion = parameters.get_champion(s.CHAMPION_PARAMETER)
    if champion is not None and champion.model_version == version:
        return PromoteResult("already_champion", job_name, version)
    decision = gate.decide(
        metrics, champion, min_test_accuracy=s.MIN_TEST_ACCURACY, margin=s.PROMOTION_MARGIN
    )
    if not decision.promote:
        _register(s, job, metrics, package_request(s, job, metrics, decision, "Rejected", ""))
        rejected = gate_record(metrics, champion, decision, "rejected", decision.reason)
        ledger.put_gate(s.ITEMS_TABLE, {**rejected, "decided_at": now_iso()})
        notifications.notify(
            s.TOPIC_ARN,
            f"Model rejected: {version}",
            {"outcome": "rejected", "job": job_name, "reason": decision.reason},
        )
        return PromoteResult("rejected", job_name, version, decision.reason)

    # Model and endpoint config have deterministic names: creating them again is a no-op.
    model = names.model_name(version)
    tags = [{"Key": "flywheel:stack", "Value": s.STACK_NAME}]
    sagemaker.create_model(
        {
            "ModelName": model,
            "PrimaryContainer": {
                "Image": inference_image(s),
                "ModelDataUrl": model_data,
                "Environment": {
                    "SAGEMAKER_PROGRAM": "inference.py",
                    "SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/code",
                    "SAGEMAKER_CONTAINER_LOG_LEVEL": "20",
                },
            },
            "ExecutionRoleArn": s.SAGEMAKER_ROLE_ARN,
            "Tags": tags,
        }
    )
    config = names.endpoint_config_name(model, variant_spec(_endpoint_settings(s)))
    sagemaker.create_endpoint_config(
        endpoint_config_request(config, model, _endpoint_settings(s), tags)
    )
    # Registered by the rollout's record step, with the deployment's outcome.
    _prepare_registry(s, job, metrics)
    # The execution input is a function of the job alone: a re-delivered event builds the same.
    rollout = {
        "job_name": job_name,
        "model_version": version,
        "model_name": model,
        "endpoint_config": config,
        "mode": s.ENDPOINT_MODE,
        "reason": decision.reason,
        "previous_champion": champion.model_version if champion else None,
        "previous_config": champion.endpoint_config if champion else None,
        "champion": {
            "model_version": version,
            "training_job": version,
            "model_name": model,
            "endpoint_config": config,
            "model_data": model_data,
            "threshold": metrics.threshold,
            "target_accuracy": metrics.target_accuracy,
            "test_accuracy": metrics.test_accuracy,
            "classes": metrics.classes,
            "test_set_id": metrics.test_set_id,
        },
        "package": package_request(s, job, metrics, decision, "PendingManualApproval", ""),
        # The record step writes the gate's final decision, and the round if promoted.
        "gate": gate_record(metrics, champion, decision, "deploying", decision.reason),
        "round": round_record(job, metrics),
        "timing": Timing(
            poll_s=s.ROLLOUT_POLL_SECONDS,
            bake_s=s.ROLLOUT_BAKE_SECONDS,
            step_timeout_s=s.ROLLOUT_STEP_TIMEOUT_SECONDS,
        ).as_input(),
    }
    ledger.put_gate(
        s.ITEMS_TABLE, {**rollout["gate"], "decided_at": now_iso()}, first_for_candidate=True
    )
    arn, started = workflows.start_once(
        s.ROLLOUT_STATE_MACHINE_ARN, execution_name(version), {"rollout": rollout}
    )
    reason = decision.reason if started else f"rollout already started: {decision.reason}"
    return PromoteResult("deploying", job_name, version, reason, execution_arn=arn)
