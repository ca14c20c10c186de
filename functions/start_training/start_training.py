"""Schedule or direct invoke -> snapshot the labeled data and start training / tuning.

Direct invoke: {"reason": "manual", "tuning": true | false | null}
Schedule:      {"reason": "schedule"} - starts only with MIN_NEW_HUMAN_LABELS new human labels.
"""

from __future__ import annotations

from typing import Literal

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.parser import BaseModel, event_parser
from aws_lambda_powertools.utilities.typing import LambdaContext
from flywheel.services.start_training import start_training
from flywheel.settings import StartTrainingSettings

# Patch only botocore: patch_all imports every supported library (~0.6 s of cold start).
logger, tracer, metrics = Logger(), Tracer(patch_modules=["botocore"]), Metrics()


class StartTrainingRequest(BaseModel):
    reason: Literal["manual", "schedule"] = "schedule"
    tuning: bool | None = None


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
@event_parser(model=StartTrainingRequest)
def handler(event: StartTrainingRequest, context: LambdaContext) -> dict:
    settings = StartTrainingSettings.from_env()
    result = start_training(settings, event.reason, event.tuning)
    preflight = result.preflight or {}
    if preflight.get("status") == "unknown":
        logger.warning("quota preflight did not run", extra={"preflight": preflight})
    elif preflight.get("status") == "insufficient":
        logger.error("training blocked by a SageMaker quota", extra=result.as_dict())
    if result.new_job:
        logger.info("training job started", extra=result.as_dict())
        metrics.add_metric(name="TrainingJobsStarted", unit=MetricUnit.Count, value=1)
    else:
        logger.info("training not started", extra=result.as_dict())
    return result.as_dict()
