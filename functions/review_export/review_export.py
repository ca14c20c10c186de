"""Schedule or direct invoke -> review/<batch>.csv, .manifest, .label-studio.json and
.label-studio.xml: what people should label next.

Audit items first (blind), then out-of-distribution ones, then uncertain ones by margin
and round-robin over predicted classes; with no champion yet, unlabeled items at random.

Direct invoke: {"limit": 100, "image_urls": "presigned" | "s3"} (both optional). Fill the
CSV's label column (or label the tasks in Label Studio and export them as JSON) and upload
it under labels/ in the data bucket: it is applied as human labels.
"""

from __future__ import annotations

from typing import Literal

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.parser import BaseModel, event_parser
from aws_lambda_powertools.utilities.typing import LambdaContext
from flywheel.services.review_export import export_review_batch
from flywheel.settings import ReviewExportSettings

# Patch only botocore: patch_all imports every supported library (~0.6 s of cold start).
logger, tracer, metrics = Logger(), Tracer(patch_modules=["botocore"]), Metrics()


class ReviewExportRequest(BaseModel):
    reason: str = "schedule"
    limit: int | None = None
    # presigned GETs (open anywhere, until they expire) or s3:// URIs (for Label Studio's
    # S3 storage connection, which presigns them itself whenever a task is opened)
    image_urls: Literal["presigned", "s3"] = "presigned"


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
@event_parser(model=ReviewExportRequest)
def handler(event: ReviewExportRequest, context: LambdaContext) -> dict:
    settings = ReviewExportSettings.from_env()
    result = export_review_batch(settings, event.limit, event.image_urls)
    logger.info("review batch exported", extra={"reason": event.reason, **result})
    metrics.add_metric(name="ItemsExportedForReview", unit=MetricUnit.Count, value=result["items"])
    return result
