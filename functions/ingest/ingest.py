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
from aws_lambda_powertools.utilities.data_classes import S3Event
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from flywheel.services.ingest import ingest_object
from flywheel.settings import IngestSettings

# Patch only botocore: patch_all imports every supported library (~0.6 s of cold start).
logger, tracer, metrics = Logger(), Tracer(patch_modules=["botocore"]), Metrics()
# A fully failed batch is reported item by item (no Lambda error, no Errors alarm noise).
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


def _normalise(data: bytes, max_side: int) -> bytes:
    from image_codec import normalise_png  # cv2 import stays out of cold start until needed

    return normalise_png(data, max_side)


@tracer.capture_method
def record_handler(record: SQSRecord, settings: IngestSettings) -> None:
    try:
        body = json.loads(record.body)
        for s3_record in S3Event(body).records if "Records" in body else []:  # not s3:TestEvent
            obj, bucket = s3_record.s3.get_object, s3_record.s3.bucket.name
            key = unquote_plus(obj.key)
            outcome = ingest_object(
                settings, bucket, key, obj.size, obj.etag or "", _normalise, obj.version_id
            )
            if outcome is None:
                logger.info("upload skipped", extra={"bucket": bucket, "key": key})
                continue
            rejected = outcome.state == "rejected"
            log = logger.warning if rejected or outcome.reason else logger.info
            event = "upload rejected" if rejected else "image ingested"
            log(event, extra={"key": key, **outcome.log})
            name = "ImagesRejected" if rejected else "ImagesIngested"
            metrics.add_metric(name=name, unit=MetricUnit.Count, value=int(outcome.created))
    except Exception as exc:
        # Logged here with the reason; re-raised so the batch processor reports the message
        # and SQS retries it (then the DLQ keeps it).
        logger.exception(
            "ingest message failed", extra={"message_id": record.message_id, "reason": repr(exc)}
        )
        raise


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
def handler(event: dict, context: LambdaContext) -> dict:
    settings = IngestSettings.from_env()
    return process_partial_response(
        event=event,
        record_handler=partial(record_handler, settings=settings),
        processor=processor,
        context=context,
    )
