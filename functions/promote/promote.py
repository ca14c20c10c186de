"""SageMaker training / tuning job state change -> gate; a winner starts the rollout."""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes import EventBridgeEvent, event_source
from aws_lambda_powertools.utilities.typing import LambdaContext
from flywheel.adapters.aws import run_once
from flywheel.services.promote import promote_job
from flywheel.settings import PromoteSettings

# Patch only botocore: patch_all imports every supported library (~0.6 s of cold start).
logger, tracer, metrics = Logger(), Tracer(patch_modules=["botocore"]), Metrics()
TUNING_DETAIL = "SageMaker HyperParameter Tuning Job State Change"
# The rollout's outcomes (promoted, rolled back) are counted by RolloutFunction.
METRIC = {
    "deploying": "RolloutsStarted",
    "rejected": "ModelsRejected",
    "failed": "TrainingJobsFailed",
}


def _job(event: EventBridgeEvent) -> dict:
    if event.detail_type == TUNING_DETAIL:
        return {
            "kind": "tuning",
            "name": event.detail["HyperParameterTuningJobName"],
            "status": event.detail["HyperParameterTuningJobStatus"],
        }
    return {
        "kind": "training",
        "name": event.detail["TrainingJobName"],
        "status": event.detail["TrainingJobStatus"],
    }


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
@event_source(data_class=EventBridgeEvent)
def handler(event: EventBridgeEvent, context: LambdaContext) -> dict:
    settings = PromoteSettings.from_env()
    job = _job(event)
    # Re-delivered events (EventBridge is at-least-once) return the stored result.
    result = run_once(
        settings.IDEMPOTENCY_TABLE,
        context,
        job,
        lambda: promote_job(settings, job["kind"], job["name"]).as_dict(),
    )
    logger.info(
        "promotion finished", extra={"job_kind": job["kind"], "job_status": job["status"], **result}
    )
    if result["outcome"] in METRIC:
        metrics.add_metric(name=METRIC[result["outcome"]], unit=MetricUnit.Count, value=1)
    return result
