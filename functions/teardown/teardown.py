"""Custom resource: on stack Delete remove the endpoint, endpoint configs and models
the pipeline created (name prefix + flywheel:stack tag), so nothing orphaned keeps billing."""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.utilities.data_classes import (
    CloudFormationCustomResourceEvent,
    event_source,
)
from aws_lambda_powertools.utilities.typing import LambdaContext
from flywheel.adapters import cfn_response
from flywheel.services.teardown import teardown
from flywheel.settings import TeardownSettings

# Patch only botocore: patch_all imports every supported library (~0.6 s of cold start).
logger, tracer, metrics = Logger(), Tracer(patch_modules=["botocore"]), Metrics()


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
@event_source(data_class=CloudFormationCustomResourceEvent)
def handler(event: CloudFormationCustomResourceEvent, context: LambdaContext) -> None:
    physical_id = event.physical_resource_id or f"{event.logical_resource_id}-teardown"
    status, reason, data = "SUCCESS", "nothing to do", {}
    try:
        if event.request_type == "Delete":
            data = teardown(TeardownSettings.from_env())
            reason = "deleted pipeline SageMaker resources"
            logger.info("pipeline resources deleted", extra=data)
    except Exception as exc:  # noqa: BLE001 - a failed teardown must not wedge the stack delete
        logger.exception("teardown failed", extra={"error": str(exc)})
        reason = f"teardown failed (delete manually): {exc}"
    # Always SUCCESS: CloudFormation would otherwise hang on delete for an hour.
    cfn_response.send(
        event.raw_event, status, reason, physical_id, {k: ",".join(v) for k, v in data.items()}
    )
