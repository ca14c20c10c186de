"""LabelQueue -> auto-label items with the champion endpoint or mark them needs_review."""

from __future__ import annotations

from functools import partial

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes import SQSEvent
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from flywheel.services.autolabel import BatchResult, label_messages
from flywheel.settings import AutoLabelSettings

# Patch only botocore: patch_all imports every supported library (~0.6 s of cold start).
logger, tracer, metrics = Logger(), Tracer(patch_modules=["botocore"]), Metrics()
# A fully failed batch is reported item by item (no Lambda error, no Errors alarm noise).
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


def record_handler(record: SQSRecord, result: BatchResult) -> None:
    # Inference ran for the whole batch up front; re-raise this message's error so
    # the batch processor reports it as a failure and SQS redelivers it.
    error = result.errors.get(record.message_id)
    if error is not None:
        logger.error(
            "label message failed",
            extra={"message_id": record.message_id, "reason": repr(error)},
            exc_info=error,
        )
        raise error


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
def handler(event: dict, context: LambdaContext) -> PartialItemFailureResponse:
    settings = AutoLabelSettings.from_env()
    messages = [(r.message_id, r.body) for r in SQSEvent(event).records]
    result = label_messages(settings, messages)
    logger.info("items labeled", extra=result.summary)
    metrics.add_metric(name="ItemsAutoLabeled", unit=MetricUnit.Count, value=result.labeled)
    metrics.add_metric(name="ItemsNeedReview", unit=MetricUnit.Count, value=result.needs_review)
    # of those: spot checks of the champion, and what a suspended champion would have labeled
    metrics.add_metric(name="SpotChecksDrawn", unit=MetricUnit.Count, value=result.spot_checks)
    metrics.add_metric(name="ItemsWithheld", unit=MetricUnit.Count, value=result.withheld)
    return process_partial_response(
        event=event,
        record_handler=partial(record_handler, result=result),
        processor=processor,
        context=context,
    )
