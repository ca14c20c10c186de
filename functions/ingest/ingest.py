"""IngestQueue -> validate, normalise and record uploads (S3 notifications inside SQS)."""

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
from aws_lambda_powertools.utilities.data_classes import S3Event, SQSEvent
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from flywheel.services.ingest import Ingested, Upload, ingest_messages
from flywheel.settings import IngestSettings

# Patch only botocore: patch_all imports every supported library (~0.6 s of cold start).
logger, tracer, metrics = Logger(), Tracer(patch_modules=["botocore"]), Metrics()
# A fully failed batch is reported item by item (no Lambda error, no Errors alarm noise).
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


def _normalise(data: bytes, max_side: int) -> bytes:
    from image_codec import normalise_png  # cv2 import stays out of cold start until needed

    return normalise_png(data, max_side)


def _uploads(record: SQSRecord) -> list[Upload]:
    body = json.loads(record.body)
    return [
        Upload(
            r.s3.bucket.name,
            unquote_plus(r.s3.get_object.key),
            r.s3.get_object.size,
            r.s3.get_object.etag or "",
            r.s3.get_object.version_id,
        )
        for r in (S3Event(body).records if "Records" in body else [])  # not s3:TestEvent
    ]


def record_handler(record: SQSRecord, result: Ingested) -> None:
    # The batch was ingested up front; log this message's outcomes, re-raise its error so
    # the batch processor reports it and SQS retries it (then the DLQ keeps it).
    for upload, outcome in result.outcomes.get(record.message_id, []):
        if outcome is None:
            logger.info("upload skipped", extra={"bucket": upload.bucket, "key": upload.key})
            continue
        rejected = outcome.state == "rejected"
        log = logger.warning if rejected or outcome.reason else logger.info
        log(
            "upload rejected" if rejected else "image ingested",
            extra={"key": upload.key, **outcome.log},
        )
        name = "ImagesRejected" if rejected else "ImagesIngested"
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=int(outcome.created))
    error = result.errors.get(record.message_id)
    if error is not None:
        logger.error(
            "ingest message failed",
            extra={"message_id": record.message_id, "reason": repr(error)},
            exc_info=error,
        )
        raise error


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
def handler(event: dict, context: LambdaContext) -> PartialItemFailureResponse:
    settings = IngestSettings.from_env()
    messages, unreadable = [], {}
    for record in SQSEvent(event).records:
        try:
            messages.append((record.message_id, _uploads(record)))
        except Exception as exc:  # noqa: BLE001 - a malformed body fails its message only
            unreadable[record.message_id] = exc
    result = ingest_messages(settings, messages, _normalise)
    result.errors.update(unreadable)
    return process_partial_response(
        event=event,
        record_handler=partial(record_handler, result=result),
        processor=processor,
        context=context,
    )
