"""LabelsFileQueue -> apply labels/*.csv|*.manifest|*.jsonl|*.label-studio.json files
(the last: a Label Studio JSON or JSON-MIN export).

Each file gets a report next to it: labels/<file>.result.json, when its last row is done.
A large file is applied in chunks from a checkpoint: an invocation short of time hands the
rest on in a message to its own queue; labels/<file>.progress.json and a log line per
chunk show how far it got.
"""

from __future__ import annotations

import json
import time
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
from flywheel.services.human_labels import LabelsFile, LabelsRun, apply_labels_file
from flywheel.settings import HumanLabelsSettings

# Patch only botocore: patch_all imports every supported library (~0.6 s of cold start).
logger, tracer, metrics = Logger(), Tracer(patch_modules=["botocore"]), Metrics()
# A fully failed batch is reported item by item (no Lambda error, no Errors alarm noise).
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


@tracer.capture_method
def record_handler(record: SQSRecord, settings: HumanLabelsSettings, deadline: float) -> None:
    try:
        body = json.loads(record.body)
        if "labels_file" in body:  # the rest of a file an earlier invocation handed on
            files = [LabelsFile.from_message(body["labels_file"])]
        else:  # S3 notifications (none in an s3:TestEvent)
            files = [
                LabelsFile(r.s3.bucket.name, unquote_plus(r.s3.get_object.key))
                for r in (S3Event(body).records if "Records" in body else [])
            ]
        for f in files:
            run = apply_labels_file(settings, f, deadline, partial(_progress, f.key))
            _report(run)
    except Exception as exc:
        # Logged here with the reason; re-raised so SQS retries it (then the DLQ keeps it).
        logger.exception(
            "labels message failed",
            extra={"message_id": record.message_id, "reason": repr(exc)},
        )
        raise


def _progress(key: str, figures: dict) -> None:
    logger.info("labels file progress", extra={"key": key, **figures})


def _report(run: LabelsRun) -> None:
    metrics.add_metric(name="HumanLabelsApplied", unit=MetricUnit.Count, value=run.applied_now)
    if run.report is None:
        # A hand-off says how far the file got (rows_done / rows_total, the counts so far).
        logger.info(
            _SAID[run.status], extra={**(run.progress or {}), "key": run.key, "outcome": run.status}
        )
        return
    for error in run.report.errors:  # one line per refused row, with its reason
        logger.warning("labels file row refused", extra={"key": run.key, **error})
    logger.info("labels file applied", extra={"key": run.key, **run.report.summary})


_SAID = {
    "gone": "labels file gone",
    "handed_on": "labels file handed on",
    "already_done": "labels file already applied",
    "waiting": "labels file being applied elsewhere; looking again later",
    "taken_over": "labels file taken over by another invocation",
    "superseded": "labels file replaced by newer bytes",
}


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
def handler(event: dict, context: LambdaContext) -> PartialItemFailureResponse:
    settings = HumanLabelsSettings.from_env()
    # Chunks stop in time to save the checkpoint and hand the rest on (never a timeout).
    deadline = time.time() + context.get_remaining_time_in_millis() / 1000
    return process_partial_response(
        event=event,
        record_handler=partial(record_handler, settings=settings, deadline=deadline),
        processor=processor,
        context=context,
    )
