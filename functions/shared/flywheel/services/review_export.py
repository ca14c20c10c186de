"""Export needs_review items, most uncertain first, as review/<batch>.csv and .manifest."""

from __future__ import annotations

from flywheel.adapters import items, storage
from flywheel.domain.items import State
from flywheel.domain.review import batch_id, order_for_review, render_csv, render_manifest
from flywheel.settings import ReviewExportSettings


def export_review_batch(s: ReviewExportSettings, limit: int | None = None) -> dict:
    pending = list(items.query_state(s.ITEMS_TABLE, State.NEEDS_REVIEW))
    chosen = order_for_review(pending, limit or s.REVIEW_BATCH_SIZE)
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
        "pending": len(pending),
        "csv": f"s3://{s.DATA_BUCKET}/{csv_key}",
        "manifest": f"s3://{s.DATA_BUCKET}/{manifest_key}",
    }
