"""Gate a finished job's model, register it, deploy it, confirm the endpoint, sweep relabels."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from flywheel.adapters import (
    alarms,
    items,
    ledger,
    notifications,
    parameters,
    queues,
    sagemaker,
    storage,
)
from flywheel.domain import gate, names
from flywheel.domain.champion import Champion
from flywheel.domain.containers import container_image
from flywheel.domain.deployment import (
    EndpointSettings,
    Step,
    endpoint_config_request,
    next_step,
    update_endpoint_request,
    variant_spec,
)
from flywheel.domain.items import State, image_key, now_iso
from flywheel.domain.sampling import AUDIT
from flywheel.errors import EndpointNotReady, JobNotFinished
from flywheel.settings import PromoteSettings

TERMINAL = {"Completed", "Failed", "Stopped"}
POLL_SECONDS = 20


@dataclass(frozen=True)
class PromoteResult:
    outcome: str  # promoted | rejected | failed | rolled_back | ignored | already_champion
    job_name: str
    model_version: str | None = None
    reason: str = ""
    relabel_messages: int = 0

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


def _register(
    s: PromoteSettings,
    job: dict,
    metrics: gate.ModelMetrics,
    decision: gate.GateDecision,
    status: str,
    note: str,
) -> str:
    model_data = job["ModelArtifacts"]["S3ModelArtifacts"]
    evaluation_key = f"models/{job['TrainingJobName']}/evaluation/metrics.json"
    storage.put_json(s.DATA_BUCKET, evaluation_key, metrics.raw)
    sagemaker.ensure_model_package_group(s.MODEL_PACKAGE_GROUP, f"{s.STACK_NAME} image classifier")
    return sagemaker.register_model_package(
        {
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
    )


def _deploy(s: PromoteSettings, model: str, config: str, sleep: Callable[[float], None]) -> str:
    """Create or update the endpoint and wait; 'live', 'rolled_back' or 'failed'."""
    endpoint_settings = _endpoint_settings(s)
    api = sagemaker.endpoints()
    tags = [{"Key": "flywheel:stack", "Value": s.STACK_NAME}]
    deadline = time.monotonic() + s.ENDPOINT_WAIT_SECONDS
    requested = False
    while True:
        step = next_step(api.describe(s.ENDPOINT_NAME), config)
        if step == Step.LIVE:
            return "live"
        if step == Step.FAILED:
            return "failed"
        if step == Step.CREATE:
            api.create(s.ENDPOINT_NAME, config, tags)
            requested = True
        elif step == Step.UPDATE:
            if requested:  # we asked for our config, it is in service with another: rolled back
                return "rolled_back"
            api.update(update_endpoint_request(s.ENDPOINT_NAME, config, endpoint_settings))
            requested = True
        elif time.monotonic() >= deadline:
            raise EndpointNotReady(f"{s.ENDPOINT_NAME} still updating to {config}")
        else:
            sleep(POLL_SECONDS)


def _endpoint_settings(s: PromoteSettings) -> EndpointSettings:
    return EndpointSettings(
        mode=s.ENDPOINT_MODE,
        instance_type=s.ENDPOINT_INSTANCE_TYPE,
        instance_count=s.ENDPOINT_INSTANCE_COUNT,
        memory_mb=s.SERVERLESS_MEMORY_MB,
        max_concurrency=s.SERVERLESS_MAX_CONCURRENCY,
        rollback_alarms=s.ROLLBACK_ALARMS,
    )


def relabel_sweep(s: PromoteSettings) -> int:
    bodies = [
        {"item_id": i["item_id"], "image_key": i.get("image_key") or image_key(i["item_id"])}
        for state in (State.UNLABELED, State.NEEDS_REVIEW)
        for i in items.query_state(s.ITEMS_TABLE, state)
        if i.get("review_reason") != AUDIT  # audit items wait for people, blind
    ]
    return queues.send_json(s.LABEL_QUEUE_URL, bodies)


def _record_gate(
    s: PromoteSettings,
    metrics: gate.ModelMetrics,
    champion: Champion | None,
    decision: gate.GateDecision,
    outcome: str,
    reason: str,
) -> None:
    """The gate's decision with both scores on the same test set (the dashboard's last gate)."""
    ledger.put_gate(
        s.ITEMS_TABLE,
        {
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
            "decided_at": now_iso(),
        },
    )


def _record_round(s: PromoteSettings, job: dict, metrics: gate.ModelMetrics, at: str) -> None:
    """One round per promoted model: labels it was trained on, what it certified."""
    certificate = metrics.raw.get("threshold") or {}
    data = metrics.raw.get("data") or {}
    ended = job.get("TrainingEndTime")
    ledger.put_round(
        s.ITEMS_TABLE,
        {
            "model_version": metrics.model_version,
            "trained_at": ended if ended is None or isinstance(ended, str) else ended.isoformat(),
            "promoted_at": at,
            "human_labels": sum(int(data.get(k) or 0) for k in ("train", "validation", "test")),
            "random_labels": data.get("random"),
            # The share of random labels at or above the threshold: what it should auto-label.
            "coverage": (
                float(certificate.get("coverage") or 0.0) if metrics.threshold <= 1.0 else 0.0
            ),
            "test_accuracy": metrics.test_accuracy,
            "threshold": metrics.threshold,
            "certificate": certificate,
        },
    )


def promote_job(
    s: PromoteSettings, kind: str, job_name: str, sleep: Callable[[float], None] = time.sleep
) -> PromoteResult:
    job, failure = _finished_training_job(kind, job_name)
    if job is None:
        notifications.notify(
            s.TOPIC_ARN,
            f"Training failed: {job_name}",
            {"outcome": "failed", "job": job_name, "reason": failure},
        )
        return PromoteResult("failed", job_name, reason=failure)
    if kind == "training" and job.get("TuningJobArn"):
        return PromoteResult("ignored", job_name, reason="child of a tuning job")
    version = job["TrainingJobName"]
    model_data = job["ModelArtifacts"]["S3ModelArtifacts"]
    metrics = gate.parse_metrics(json.loads(storage.read_tar_member(model_data, "metrics.json")))
    champion = parameters.get_champion(s.CHAMPION_PARAMETER)
    if champion is not None and champion.model_version == version:
        return PromoteResult("already_champion", job_name, version)
    decision = gate.decide(
        metrics, champion, min_test_accuracy=s.MIN_TEST_ACCURACY, margin=s.PROMOTION_MARGIN
    )
    if not decision.promote:
        _register(s, job, metrics, decision, "Rejected", "")
        _record_gate(s, metrics, champion, decision, "rejected", decision.reason)
        notifications.notify(
            s.TOPIC_ARN,
            f"Model rejected: {version}",
            {"outcome": "rejected", "job": job_name, "reason": decision.reason},
        )
        return PromoteResult("rejected", job_name, version, decision.reason)

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
    spec = variant_spec(_endpoint_settings(s))
    config = names.endpoint_config_name(model, spec)
    sagemaker.create_endpoint_config(
        endpoint_config_request(config, model, _endpoint_settings(s), tags)
    )
    state = _deploy(s, model, config, sleep)
    if state != "live":
        reason = f"deployment {state}: endpoint kept its previous config"
        _register(s, job, metrics, decision, "Rejected", reason)
        _record_gate(s, metrics, champion, decision, state, reason)
        notifications.notify(
            s.TOPIC_ARN,
            f"Deployment {state}: {version}",
            {"outcome": state, "job": job_name, "reason": reason},
        )
        return PromoteResult(state, job_name, version, reason)

    _register(s, job, metrics, decision, "Approved", "")
    promoted_at = now_iso()
    _record_gate(s, metrics, champion, decision, "promoted", decision.reason)
    _record_round(s, job, metrics, promoted_at)
    # A new model_version has no spot checks and no suspension: the alarm a suspended
    # predecessor raised is over.
    alarms.clear_alarm(s.THRESHOLD_ALARM_NAME, s.STACK_NAME, f"new champion {version}")
    # Only now, with the active config confirmed to be ours, is it the champion.
    parameters.put_champion(
        s.CHAMPION_PARAMETER,
        Champion(
            model_version=version,
            training_job=version,
            model_name=model,
            endpoint_config=config,
            model_data=model_data,
            threshold=metrics.threshold,
            target_accuracy=metrics.target_accuracy,
            test_accuracy=metrics.test_accuracy,
            classes=metrics.classes,
            test_set_id=metrics.test_set_id,
            promoted_at=promoted_at,
        ),
    )
    swept = relabel_sweep(s)
    notifications.notify(
        s.TOPIC_ARN,
        f"Model promoted: {version}",
        {
            "outcome": "promoted",
            "job": job_name,
            "model_version": version,
            "reason": decision.reason,
            "relabel_messages": swept,
        },
    )
    return PromoteResult("promoted", job_name, version, decision.reason, swept)
