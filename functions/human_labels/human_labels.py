"""LabelsFileQueue -> apply labels/*.csv|*.manifest|*.jsonl|*.label-studio.json files
(the last: a Label Studio JSON or JSON-MIN export).

Each file gets a report next to it: labels/<file>.result.json.
"""

from __future__ import annotations

import json
from functools import partial
from urllib.parse import unquote_plus

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes import S3Event
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from flywheel.services.human_labels import apply_labels_file
from flywheel.settings import HumanLabelsSettings

# Patch only botocore: patch_all imports every supported library (~0.6 s of cold start).
logger, tracer, metrics = Logger(), Tracer(patch_modules=["botocore"]), Metrics()
# A fully failed batch is reported item by item (no Lambda error, no Errors alarm noise).
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


@tracer.capture_method
def record_handler(record: SQSRecord, settings: HumanLabelsSettings) -> None:
    try:
        body = json.loads(record.body)
        for s3_record in S3Event(body).records if "Records" in body else []:  # not s3:TestEvent
            key = unquote_plus(s3_record.s3.get_object.key)
            report = apply_labels_file(settings, s3_record.s3.bucket.name, key)
            if report is None:
                logger.info("labels file gone", extra={"key": key})
                continue
            for error in report.errors:  # one line per refused row, with its reason
                logger.warning("labels file row refused", extra={"key": key, **error})
            logger.info("labels file applied", extra={"key": key, **report.summary})
            metrics.add_metric(
                name="HumanLabelsApplied", unit=MetricUnit.Count, value=report.applied
            )
    except Exception as exc:
        # Logged here with the reason; re-raised so SQS retries it (then the DLQ keeps it).
        logger.exception(
            "labels message failed",
            extra={"message_id": record.message_id, "reason": repr(exc)},
        )
        raise


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
def handler(event: dict, context: LambdaContext) -> PartialItemFailureResponse:
    settings = HumanLabelsSettings.from_env()
    return process_partial_response(
        event=event,
        record_handler=partial(record_handler, settings=settings),
        processor=processor,
        context=context,
    )
