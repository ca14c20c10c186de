"""Export a review batch (audit, out-of-distribution, then uncertain and diverse) under review/.

Without a champion nothing gets a model label, so the batch also offers unlabeled items
in random order: people can label and the loop does not stall before its first model.
"""

from __future__ import annotations

from collections import Counter

from flywheel.adapters import items, parameters, storage
from flywheel.domain.items import State
from flywheel.domain.review import (
    batch_id,
    order_for_review,
    render_csv,
    render_manifest,
    review_reason,
)
from flywheel.settings import ReviewExportSettings


def export_review_batch(s: ReviewExportSettings, limit: int | None = None) -> dict:
    pending = list(items.query_state(s.ITEMS_TABLE, State.NEEDS_REVIEW))
    cold_start = []
    if parameters.get_champion(s.CHAMPION_PARAMETER) is None:
        cold_start = list(items.query_state(s.ITEMS_TABLE, State.UNLABELED))
    chosen = order_for_review(pending, limit or s.REVIEW_BATCH_SIZE, cold_start)
    if not chosen:
        return {"batch_id": None, "items": 0, "pending": 0}
    batch = batch_id(chosen)
    csv_key, manifest_key = f"review/{batch}.csv", f"review/{batch}.manifest"
    storage.put_bytes(
        s.DATA_BUCKET, csv_key, render_csv(chosen, s.DATA_BUCKET).encode(), "text/csv"
    )
    storage.put_bytes(
        s.DATA_BUCKET,
        manifest_key,
        render_manifest(chosen, s.DATA_BUCKET).encode(),
        "application/jsonlines",
    )
    return {
        "batch_id": batch,
        "items": len(chosen),
        "pending": len(pending) + len(cold_start),
        "reasons": dict(Counter(review_reason(i) for i in chosen)),
        "csv": f"s3://{s.DATA_BUCKET}/{csv_key}",
        "manifest": f"s3://{s.DATA_BUCKET}/{manifest_key}",
    }
